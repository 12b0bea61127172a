/* nftables through libnftables: one context, commands given as nft's own
 * language in a printf-style buffer, run as one transaction (all or
 * nothing). The kernel's error text is kept for the caller's message. */
#ifndef CLOISON_NET_NFT_H
#define CLOISON_NET_NFT_H

#include <stdbool.h>
#include <stddef.h>

struct nft_ctx;

struct nft {
	struct nft_ctx *ctx;
	char err[512]; /* the last failure's text from nft, "" after a success */
};

/* 0 or -ENOMEM. */
int nft_open(struct nft *n);
void nft_close(struct nft *n);

/* Runs the commands (a whole batch, atomically). 0 or -EINVAL (the text is
 * in n->err); -ENOMEM. */
int nft_run(struct nft *n, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Runs a listing command; *out (malloc'd, caller frees) gets nft's output,
 * as JSON when json is set. 0 or -errno. */
int nft_list(struct nft *n, bool json, char **out, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* True when table FAMILY NAME exists. */
bool nft_table_exists(struct nft *n, const char *family, const char *name);

/* Deletes table FAMILY NAME; one that does not exist is 0. */
int nft_table_delete(struct nft *n, const char *family, const char *name);

#endif
