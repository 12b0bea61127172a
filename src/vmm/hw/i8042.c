/* i8042 keyboard controller: enough for Linux's i8042 and atkbd probes to
 * finish quickly and for the reset line.
 *
 * The controller answers its commands (self-test, command byte, port tests,
 * output port, AUX loopback) through a small output queue; a keyboard that
 * never types answers its protocol (ACK, reset → 0xAA, identify → MF2).
 * The AUX port exists only as the controller's loopback, so Linux's AUX
 * IRQ test passes quickly and its mouse probe then times out harmlessly
 * (no device answers behind the port, as with no mouse plugged in).
 *
 * Pulsing the reset line (0xFE, or any 0xF0-0xFF command with bit 0 clear,
 * or writing the output port with bit 0 clear) requests VM_STOP_RESET. */
#include "vmm/hw/hw.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "vmm/bus/bus.h"
#include "vmm/layout.h"
#include "vmm/state/record.h"
#include "vmm/vm.h"

#define IRQ_KBD 1
#define IRQ_AUX 12

#define STS_OBF 0x01
#define STS_SYS 0x04
#define STS_CMD 0x08 /* last write went to the command port */
#define STS_UNLOCKED 0x10
#define STS_AUX_OBF 0x20

#define CTR_KBD_INT 0x01
#define CTR_AUX_INT 0x02
#define CTR_SYS 0x04
#define CTR_KBD_DIS 0x10
#define CTR_AUX_DIS 0x20
#define CTR_XLATE 0x40

#define OUTQ_SIZE 16

/* What the next byte written to the data port means. */
enum data_target {
	TO_KEYBOARD,
	TO_CTR,	       /* after 0x60 */
	TO_OUTPORT,    /* after 0xD1 */
	TO_KBD_OUTBUF, /* after 0xD2 */
	TO_AUX_OUTBUF, /* after 0xD3 */
	TO_AUX_DEVICE, /* after 0xD4 */
	TO_KBD_ARG,    /* the argument of a keyboard command (LEDs, rate, set) */
};

struct outq_entry {
	uint8_t byte;
	bool aux;
};

struct i8042 {
	struct vm *vm;
	pthread_mutex_t lock;
	uint8_t ctr;
	uint8_t outport;
	bool last_was_cmd;
	enum data_target target;
	uint8_t kbd_pending_cmd; /* the keyboard command awaiting its argument */
	struct outq_entry outq[OUTQ_SIZE];
	unsigned outq_head, outq_count;
};

static void irq_pulse(struct i8042 *k, unsigned irq)
{
	vm_set_irq_line(k->vm, irq, 1);
	vm_set_irq_line(k->vm, irq, 0);
}

/* Raises the interrupt for the byte now at the head of the queue. */
static void head_irq(struct i8042 *k)
{
	const struct outq_entry *e;

	if (k->outq_count == 0)
		return;
	e = &k->outq[k->outq_head];
	if (e->aux && (k->ctr & CTR_AUX_INT))
		irq_pulse(k, IRQ_AUX);
	else if (!e->aux && (k->ctr & CTR_KBD_INT))
		irq_pulse(k, IRQ_KBD);
}

static void outq_push(struct i8042 *k, uint8_t byte, bool aux)
{
	if (k->outq_count >= OUTQ_SIZE)
		return; /* a guest that never reads loses the newest bytes */
	k->outq[(k->outq_head + k->outq_count) % OUTQ_SIZE] = (struct outq_entry){ byte, aux };
	k->outq_count++;
	if (k->outq_count == 1)
		head_irq(k);
}

static uint8_t outq_pop(struct i8042 *k)
{
	uint8_t b;

	if (k->outq_count == 0)
		return 0; /* real controllers return the stale byte; 0 is as good */
	b = k->outq[k->outq_head].byte;
	k->outq_head = (k->outq_head + 1) % OUTQ_SIZE;
	k->outq_count--;
	head_irq(k);
	return b;
}

static uint8_t status(const struct i8042 *k)
{
	uint8_t s = STS_UNLOCKED;

	if (k->ctr & CTR_SYS)
		s |= STS_SYS;
	if (k->last_was_cmd)
		s |= STS_CMD;
	if (k->outq_count > 0) {
		s |= STS_OBF;
		if (k->outq[k->outq_head].aux)
			s |= STS_AUX_OBF;
	}
	return s;
}

static void request_reset(struct i8042 *k)
{
	vm_request_stop(k->vm, VM_STOP_RESET, "guest pulsed the i8042 reset line");
}

static void keyboard_command(struct i8042 *k, uint8_t cmd)
{
	switch (cmd) {
	case 0xff: /* reset: ACK, then self-test passed */
		outq_push(k, 0xfa, false);
		outq_push(k, 0xaa, false);
		break;
	case 0xf2: /* identify: an MF2 keyboard */
		outq_push(k, 0xfa, false);
		outq_push(k, 0xab, false);
		outq_push(k, (k->ctr & CTR_XLATE) ? 0x41 : 0x83, false);
		break;
	case 0xee: /* echo */
		outq_push(k, 0xee, false);
		break;
	case 0xed: /* set LEDs */
	case 0xf3: /* typematic rate */
	case 0xf0: /* scancode set */
		outq_push(k, 0xfa, false);
		k->kbd_pending_cmd = cmd;
		k->target = TO_KBD_ARG;
		break;
	case 0xf4: /* enable */
	case 0xf5: /* disable */
	case 0xf6: /* defaults */
	case 0xf7:
	case 0xf8:
	case 0xf9:
	case 0xfa:
	case 0xfb:
	case 0xfc:
	case 0xfd:
		outq_push(k, 0xfa, false);
		break;
	default:
		outq_push(k, 0xfe, false); /* resend: not a command we know */
		break;
	}
}

static void keyboard_argument(struct i8042 *k, uint8_t arg)
{
	outq_push(k, 0xfa, false);
	if (k->kbd_pending_cmd == 0xf0 && arg == 0)
		outq_push(k, 0x02, false); /* current scancode set */
}

static void write_data(struct i8042 *k, uint8_t v)
{
	enum data_target t = k->target;

	k->target = TO_KEYBOARD;
	switch (t) {
	case TO_KEYBOARD:
		k->ctr &= (uint8_t)~CTR_KBD_DIS; /* sending to the keyboard enables it */
		keyboard_command(k, v);
		break;
	case TO_KBD_ARG:
		keyboard_argument(k, v);
		break;
	case TO_CTR:
		k->ctr = v;
		break;
	case TO_OUTPORT:
		k->outport = v;
		if (!(v & 0x01))
			request_reset(k);
		break;
	case TO_KBD_OUTBUF:
		outq_push(k, v, false);
		break;
	case TO_AUX_OUTBUF:
		outq_push(k, v, true);
		break;
	case TO_AUX_DEVICE:
		break; /* no mouse behind the AUX port */
	}
}

static void write_command(struct i8042 *k, uint8_t cmd)
{
	k->target = TO_KEYBOARD;
	switch (cmd) {
	case 0x20: /* read command byte */
		outq_push(k, k->ctr, false);
		break;
	case 0x60:
		k->target = TO_CTR;
		break;
	case 0xa7:
		k->ctr |= CTR_AUX_DIS;
		break;
	case 0xa8:
		k->ctr &= (uint8_t)~CTR_AUX_DIS;
		break;
	case 0xa9: /* AUX interface test: OK */
	case 0xab: /* keyboard interface test: OK */
		outq_push(k, 0x00, false);
		break;
	case 0xaa: /* controller self-test */
		k->ctr |= CTR_SYS;
		outq_push(k, 0x55, false);
		break;
	case 0xad:
		k->ctr |= CTR_KBD_DIS;
		break;
	case 0xae:
		k->ctr &= (uint8_t)~CTR_KBD_DIS;
		break;
	case 0xc0: /* read input port */
		outq_push(k, 0x00, false);
		break;
	case 0xd0: /* read output port */
		outq_push(k, k->outport, false);
		break;
	case 0xd1:
		k->target = TO_OUTPORT;
		break;
	case 0xd2:
		k->target = TO_KBD_OUTBUF;
		break;
	case 0xd3:
		k->target = TO_AUX_OUTBUF;
		break;
	case 0xd4:
		k->target = TO_AUX_DEVICE;
		break;
	default:
		/* 0xF0-0xFF pulse output-port lines low for those bits clear
		 * in the low nibble; bit 0 is the CPU reset line. */
		if (cmd >= 0xf0 && !(cmd & 0x01))
			request_reset(k);
		break;
	}
}

static void i8042_io_read(void *opaque, uint64_t off, void *data, unsigned len, bool cmd_port)
{
	struct i8042 *k = opaque;
	uint8_t *out = data;

	pthread_mutex_lock(&k->lock);
	for (unsigned i = 0; i < len; i++)
		out[i] = cmd_port ? status(k) : outq_pop(k);
	pthread_mutex_unlock(&k->lock);
}

static void i8042_io_write(void *opaque, const void *data, unsigned len, bool cmd_port)
{
	struct i8042 *k = opaque;
	const uint8_t *in = data;

	pthread_mutex_lock(&k->lock);
	/* Byte-wide ports: a wider access delivers its low byte only. */
	if (len > 0) {
		k->last_was_cmd = cmd_port;
		if (cmd_port)
			write_command(k, in[0]);
		else
			write_data(k, in[0]);
	}
	pthread_mutex_unlock(&k->lock);
}

static void data_read(void *opaque, uint64_t off, void *data, unsigned len)
{
	i8042_io_read(opaque, off, data, len, false);
}

static void data_write(void *opaque, uint64_t off, const void *data, unsigned len)
{
	i8042_io_write(opaque, data, len, false);
}

static void cmd_read(void *opaque, uint64_t off, void *data, unsigned len)
{
	i8042_io_read(opaque, off, data, len, true);
}

static void cmd_write(void *opaque, uint64_t off, const void *data, unsigned len)
{
	i8042_io_write(opaque, data, len, true);
}

static const struct io_ops data_ops = { .read = data_read, .write = data_write };
static const struct io_ops cmd_ops = { .read = cmd_read, .write = cmd_write };

static void i8042_power_on(struct i8042 *k)
{
	k->ctr = CTR_KBD_INT | CTR_SYS | CTR_XLATE;
	k->outport = 0x03; /* reset line high (inactive), A20 on */
	k->last_was_cmd = false;
	k->target = TO_KEYBOARD;
	k->kbd_pending_cmd = 0;
	k->outq_head = 0;
	k->outq_count = 0;
}

int i8042_create(struct vm *vm, struct i8042 **out)
{
	struct i8042 *k = calloc(1, sizeof(*k));
	int err;

	if (!k)
		return -ENOMEM;
	err = -pthread_mutex_init(&k->lock, NULL);
	if (err)
		goto err_free;
	k->vm = vm;
	i8042_power_on(k);
	err = io_bus_register(vm_pio_bus(vm), PORT_I8042_DATA, 1, &data_ops, k, "i8042-data");
	if (err)
		goto err_lock;
	err = io_bus_register(vm_pio_bus(vm), PORT_I8042_CMD, 1, &cmd_ops, k, "i8042-cmd");
	if (err)
		goto err_data;
	*out = k;
	return 0;

err_data:
	io_bus_unregister(vm_pio_bus(vm), PORT_I8042_DATA);
err_lock:
	pthread_mutex_destroy(&k->lock);
err_free:
	free(k);
	return err;
}

void i8042_reset(struct i8042 *k)
{
	pthread_mutex_lock(&k->lock);
	i8042_power_on(k);
	pthread_mutex_unlock(&k->lock);
}

#define I8042_STATE_VERSION 1

static const struct state_field i8042_fields[] = {
	STATE_FIELD(struct i8042, ctr, 1),
	STATE_FIELD(struct i8042, outport, 1),
	STATE_FIELD(struct i8042, last_was_cmd, 1),
	STATE_FIELD(struct i8042, target, 1),
	STATE_FIELD(struct i8042, kbd_pending_cmd, 1),
	STATE_FIELD_BYTES(struct i8042, outq, 1), /* {byte, aux} pairs */
	STATE_FIELD(struct i8042, outq_head, 1),
	STATE_FIELD(struct i8042, outq_count, 1),
	STATE_FIELD_END,
};

static bool i8042_state_ok(const void *p)
{
	const struct i8042 *in = p;

	if (!state_bool_ok(&in->last_was_cmd) || (unsigned)in->target > TO_KBD_ARG ||
	    in->outq_head >= OUTQ_SIZE || in->outq_count > OUTQ_SIZE)
		return false;
	for (unsigned i = 0; i < OUTQ_SIZE; i++)
		if (!state_bool_ok(&in->outq[i].aux))
			return false;
	return true;
}

void i8042_save(struct i8042 *k, struct state_writer *w, uint32_t instance)
{
	pthread_mutex_lock(&k->lock);
	state_save_fields(w, STATE_SECTION_I8042, instance, I8042_STATE_VERSION, i8042_fields, k);
	pthread_mutex_unlock(&k->lock);
}

/* Interrupts are pulses: a byte already announced before the save was
 * seen by the guest's PIC/IOAPIC, whose state is restored with KVM's. */
int i8042_restore(struct i8042 *k, struct state_reader *r)
{
	int ret;

	pthread_mutex_lock(&k->lock);
	ret = state_restore_fields(r, I8042_STATE_VERSION, i8042_fields, k, sizeof(*k),
				   i8042_state_ok);
	pthread_mutex_unlock(&k->lock);
	return ret;
}

void i8042_destroy(struct i8042 *k)
{
	if (!k)
		return;
	io_bus_unregister(vm_pio_bus(k->vm), PORT_I8042_CMD);
	io_bus_unregister(vm_pio_bus(k->vm), PORT_I8042_DATA);
	pthread_mutex_destroy(&k->lock);
	free(k);
}
