/* CRC-32C (Castagnoli), as VHDX uses for its headers, region table, log
 * entries and metadata. */
#ifndef CLOISON_COMMON_CRC32C_H
#define CLOISON_COMMON_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Continues a CRC: start with crc = 0. The value returned is the final CRC
 * (pre- and post-inversion are done inside), so crc32c(crc32c(0,a),b) ==
 * crc32c(0, a||b). Uses SSE4.2 when the CPU has it. */
uint32_t crc32c(uint32_t crc, const void *buf, size_t len);

#endif
