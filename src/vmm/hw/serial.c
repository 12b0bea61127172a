/* 16550A UART (8250 family), close enough to the real part that Linux's
 * 8250 autoconfig calls it a 16550A and drives it by interrupts, and simple
 * polling drivers (LSR.THRE / LSR.DR) work as well.
 *
 * Transmission is instantaneous: a THR write goes to the output callback at
 * once, so THRE and TEMT are always set. Reception goes through the 16-byte
 * FIFO (1 byte with the FIFO off, as on a 16450); bytes the host hands over
 * while the FIFO is full wait in a backlog and move up as the guest reads,
 * so the guest never sees an overrun from host input.
 *
 * The interrupt line is a level computed from IIR after every register
 * change and driven on IRQ `irq` only when it changes (ISA edge semantics:
 * the 8250 driver loops until IIR says "no interrupt", which lowers it). */
#include "vmm/hw/hw.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/bus/bus.h"
#include "vmm/state/record.h"
#include "vmm/vm.h"

enum {
	UART_RX = 0,  /* RBR (read) / THR (write); DLL with DLAB */
	UART_IER = 1, /* DLM with DLAB */
	UART_IIR = 2, /* read; FCR on write */
	UART_LCR = 3,
	UART_MCR = 4,
	UART_LSR = 5,
	UART_MSR = 6,
	UART_SCR = 7,
};

#define IER_RDI 0x01
#define IER_THRI 0x02
#define IER_RLSI 0x04
#define IER_MSI 0x08

#define IIR_NO_INT 0x01
#define IIR_MSI 0x00
#define IIR_THRI 0x02
#define IIR_RDI 0x04
#define IIR_RLSI 0x06
#define IIR_FIFO_ON 0xc0

#define FCR_ENABLE 0x01
#define FCR_CLEAR_RX 0x02
#define FCR_CLEAR_TX 0x04

#define LCR_DLAB 0x80

#define MCR_DTR 0x01
#define MCR_RTS 0x02
#define MCR_OUT1 0x04
#define MCR_OUT2 0x08
#define MCR_LOOP 0x10

#define LSR_DR 0x01
#define LSR_OE 0x02
#define LSR_BI 0x10
#define LSR_THRE 0x20
#define LSR_TEMT 0x40
#define LSR_ERRORS 0x1e

#define MSR_DCTS 0x01
#define MSR_DDSR 0x02
#define MSR_TERI 0x04
#define MSR_DDCD 0x08
#define MSR_CTS 0x10
#define MSR_DSR 0x20
#define MSR_RI 0x40
#define MSR_DCD 0x80

#define FIFO_SIZE 16
#define BACKLOG_SIZE 4096

struct serial {
	struct vm *vm;
	uint16_t port;
	unsigned irq;
	pthread_mutex_t lock;
	serial_output_fn output;
	void *output_opaque;

	uint8_t ier, lcr, mcr, scr, fcr;
	uint8_t dll, dlm;
	uint8_t lsr_errors; /* OE/BI..., cleared by reading LSR */
	uint8_t msr_lines;  /* CTS/DSR/RI/DCD as last seen */
	uint8_t msr_deltas; /* DCTS/DDSR/TERI/DDCD, cleared by reading MSR */
	bool thr_pending;   /* THRE interrupt latched (cleared by IIR read/THR write) */
	int irq_level;
	bool paused; /* the VM is paused: input is kept, no interrupt is raised */

	uint8_t fifo[FIFO_SIZE];
	unsigned fifo_head, fifo_count;
	uint8_t backlog[BACKLOG_SIZE];
	unsigned backlog_head, backlog_count;
};

static unsigned fifo_capacity(const struct serial *s)
{
	return (s->fcr & FCR_ENABLE) ? FIFO_SIZE : 1;
}

static bool fifo_push(struct serial *s, uint8_t c)
{
	if (s->fifo_count >= fifo_capacity(s))
		return false;
	s->fifo[(s->fifo_head + s->fifo_count) % FIFO_SIZE] = c;
	s->fifo_count++;
	return true;
}

/* Moves waiting host input up into the FIFO as room appears. */
static void fifo_refill(struct serial *s)
{
	while (s->backlog_count > 0 && fifo_push(s, s->backlog[s->backlog_head])) {
		s->backlog_head = (s->backlog_head + 1) % BACKLOG_SIZE;
		s->backlog_count--;
	}
}

static uint8_t fifo_pop(struct serial *s)
{
	uint8_t c;

	if (s->fifo_count == 0)
		return 0;
	c = s->fifo[s->fifo_head];
	s->fifo_head = (s->fifo_head + 1) % FIFO_SIZE;
	s->fifo_count--;
	fifo_refill(s);
	return c;
}

static void fifo_clear(struct serial *s)
{
	s->fifo_head = 0;
	s->fifo_count = 0;
}

/* The modem-status inputs: in loopback they follow MCR, otherwise the line
 * is always "connected" (CTS, DSR, DCD), as a terminal would hold it. */
static uint8_t msr_inputs(const struct serial *s)
{
	uint8_t v = 0;

	if (!(s->mcr & MCR_LOOP))
		return MSR_CTS | MSR_DSR | MSR_DCD;
	if (s->mcr & MCR_RTS)
		v |= MSR_CTS;
	if (s->mcr & MCR_DTR)
		v |= MSR_DSR;
	if (s->mcr & MCR_OUT1)
		v |= MSR_RI;
	if (s->mcr & MCR_OUT2)
		v |= MSR_DCD;
	return v;
}

static void msr_update(struct serial *s)
{
	uint8_t now = msr_inputs(s), changed = now ^ s->msr_lines;

	if (changed & MSR_CTS)
		s->msr_deltas |= MSR_DCTS;
	if (changed & MSR_DSR)
		s->msr_deltas |= MSR_DDSR;
	if (changed & MSR_DCD)
		s->msr_deltas |= MSR_DDCD;
	if ((changed & MSR_RI) && !(now & MSR_RI))
		s->msr_deltas |= MSR_TERI; /* trailing edge only */
	s->msr_lines = now;
}

static uint8_t lsr_value(const struct serial *s)
{
	uint8_t v = LSR_THRE | LSR_TEMT | s->lsr_errors;

	if (s->fifo_count > 0)
		v |= LSR_DR;
	return v;
}

/* The highest-priority pending interrupt, as IIR bits 3:0. */
static uint8_t iir_source(const struct serial *s)
{
	if ((s->ier & IER_RLSI) && (s->lsr_errors & LSR_ERRORS))
		return IIR_RLSI;
	if ((s->ier & IER_RDI) && s->fifo_count > 0)
		return IIR_RDI;
	if ((s->ier & IER_THRI) && s->thr_pending)
		return IIR_THRI;
	if ((s->ier & IER_MSI) && (s->msr_deltas & 0x0f))
		return IIR_MSI;
	return IIR_NO_INT;
}

static void irq_update(struct serial *s)
{
	int level = iir_source(s) != IIR_NO_INT;

	if (s->paused)
		return; /* resume brings the line up to date */
	if (level != s->irq_level) {
		s->irq_level = level;
		vm_set_irq_line(s->vm, s->irq, level);
	}
}

static void transmit(struct serial *s, uint8_t c)
{
	if (s->mcr & MCR_LOOP) {
		if (!fifo_push(s, c))
			s->lsr_errors |= LSR_OE;
	} else if (s->output) {
		s->output(s->output_opaque, &c, 1);
	}
	/* The byte left at once: THR is empty again. */
	s->thr_pending = true;
}

static void write_fcr(struct serial *s, uint8_t v)
{
	if ((v ^ s->fcr) & FCR_ENABLE) {
		/* Switching the FIFO on or off empties it. */
		fifo_clear(s);
	} else if (v & FCR_CLEAR_RX) {
		fifo_clear(s);
	}
	s->fcr = v & (FCR_ENABLE | 0xc0); /* enable + trigger level are kept */
	fifo_refill(s);
}

static void write_reg(struct serial *s, unsigned reg, uint8_t v)
{
	switch (reg) {
	case UART_RX:
		if (s->lcr & LCR_DLAB)
			s->dll = v;
		else
			transmit(s, v);
		break;
	case UART_IER:
		if (s->lcr & LCR_DLAB) {
			s->dlm = v;
			break;
		}
		/* Enabling THRI while THR is empty raises THRE at once; the 8250
		 * driver's startup test relies on a re-enable re-raising it. */
		if ((v & IER_THRI) && !(s->ier & IER_THRI))
			s->thr_pending = true;
		s->ier = v & 0x0f;
		break;
	case UART_IIR:
		write_fcr(s, v);
		break;
	case UART_LCR:
		s->lcr = v;
		break;
	case UART_MCR:
		s->mcr = v & 0x1f;
		msr_update(s);
		break;
	case UART_LSR:
	case UART_MSR:
		break; /* read-only on a 16550A */
	case UART_SCR:
		s->scr = v;
		break;
	}
}

static uint8_t read_reg(struct serial *s, unsigned reg)
{
	uint8_t v = 0;

	switch (reg) {
	case UART_RX:
		return (s->lcr & LCR_DLAB) ? s->dll : fifo_pop(s);
	case UART_IER:
		return (s->lcr & LCR_DLAB) ? s->dlm : s->ier;
	case UART_IIR:
		v = iir_source(s);
		if (v == IIR_THRI)
			s->thr_pending = false; /* reading IIR acknowledges THRE */
		return v | ((s->fcr & FCR_ENABLE) ? IIR_FIFO_ON : 0);
	case UART_LCR:
		return s->lcr;
	case UART_MCR:
		return s->mcr;
	case UART_LSR:
		v = lsr_value(s);
		s->lsr_errors = 0;
		return v;
	case UART_MSR:
		msr_update(s);
		v = s->msr_lines | s->msr_deltas;
		s->msr_deltas = 0;
		return v;
	case UART_SCR:
		return s->scr;
	}
	return 0xff;
}

/* A wider access to a byte-wide device is a run of byte accesses. */
static void serial_io_read(void *opaque, uint64_t off, void *data, unsigned len)
{
	struct serial *s = opaque;
	uint8_t *out = data;

	pthread_mutex_lock(&s->lock);
	for (unsigned i = 0; i < len; i++)
		out[i] = (off + i < 8) ? read_reg(s, (unsigned)(off + i)) : 0xff;
	irq_update(s);
	pthread_mutex_unlock(&s->lock);
}

static void serial_io_write(void *opaque, uint64_t off, const void *data, unsigned len)
{
	struct serial *s = opaque;
	const uint8_t *in = data;

	pthread_mutex_lock(&s->lock);
	for (unsigned i = 0; i < len; i++)
		if (off + i < 8)
			write_reg(s, (unsigned)(off + i), in[i]);
	irq_update(s);
	pthread_mutex_unlock(&s->lock);
}

static const struct io_ops serial_ops = {
	.read = serial_io_read,
	.write = serial_io_write,
};

static void serial_power_on(struct serial *s)
{
	s->ier = 0;
	s->lcr = 0;
	s->mcr = 0;
	s->scr = 0;
	s->fcr = 0;
	s->dll = 0x0c; /* 9600 baud */
	s->dlm = 0;
	s->lsr_errors = 0;
	s->thr_pending = false;
	s->msr_lines = msr_inputs(s);
	s->msr_deltas = 0;
	fifo_clear(s);
	s->backlog_head = 0;
	s->backlog_count = 0;
}

int serial_create(struct vm *vm, uint16_t port, unsigned irq, struct serial **out)
{
	struct serial *s = calloc(1, sizeof(*s));
	int err;

	if (!s)
		return -ENOMEM;
	err = -pthread_mutex_init(&s->lock, NULL);
	if (err)
		goto err_free;
	s->vm = vm;
	s->port = port;
	s->irq = irq;
	serial_power_on(s);
	err = io_bus_register(vm_pio_bus(vm), port, 8, &serial_ops, s, "serial");
	if (err)
		goto err_lock;
	*out = s;
	return 0;

err_lock:
	pthread_mutex_destroy(&s->lock);
err_free:
	free(s);
	return err;
}

void serial_set_output(struct serial *s, serial_output_fn fn, void *opaque)
{
	pthread_mutex_lock(&s->lock);
	s->output = fn;
	s->output_opaque = opaque;
	pthread_mutex_unlock(&s->lock);
}

size_t serial_receive(struct serial *s, const uint8_t *buf, size_t len)
{
	size_t taken = 0;

	pthread_mutex_lock(&s->lock);
	while (taken < len && s->backlog_count < BACKLOG_SIZE) {
		s->backlog[(s->backlog_head + s->backlog_count) % BACKLOG_SIZE] = buf[taken++];
		s->backlog_count++;
	}
	fifo_refill(s);
	irq_update(s);
	pthread_mutex_unlock(&s->lock);
	return taken;
}

void serial_reset(struct serial *s)
{
	pthread_mutex_lock(&s->lock);
	serial_power_on(s);
	irq_update(s);
	pthread_mutex_unlock(&s->lock);
}

void serial_pause(struct serial *s)
{
	pthread_mutex_lock(&s->lock);
	s->paused = true;
	pthread_mutex_unlock(&s->lock);
}

void serial_resume(struct serial *s)
{
	pthread_mutex_lock(&s->lock);
	s->paused = false;
	irq_update(s);
	pthread_mutex_unlock(&s->lock);
}

#define SERIAL_STATE_VERSION 1

/* Everything the guest can observe; output routing and the lock are the
 * host's. The interrupt line is not state: KVM's restored irqchip does
 * not know which device holds a line, so every restore drives its line
 * again from the registers. */
static const struct state_field serial_fields[] = {
	STATE_FIELD(struct serial, ier, 1),
	STATE_FIELD(struct serial, lcr, 1),
	STATE_FIELD(struct serial, mcr, 1),
	STATE_FIELD(struct serial, scr, 1),
	STATE_FIELD(struct serial, fcr, 1),
	STATE_FIELD(struct serial, dll, 1),
	STATE_FIELD(struct serial, dlm, 1),
	STATE_FIELD(struct serial, lsr_errors, 1),
	STATE_FIELD(struct serial, msr_lines, 1),
	STATE_FIELD(struct serial, msr_deltas, 1),
	STATE_FIELD(struct serial, thr_pending, 1),
	STATE_FIELD_BYTES(struct serial, fifo, 1),
	STATE_FIELD(struct serial, fifo_head, 1),
	STATE_FIELD(struct serial, fifo_count, 1),
	STATE_FIELD_BYTES(struct serial, backlog, 1),
	STATE_FIELD(struct serial, backlog_head, 1),
	STATE_FIELD(struct serial, backlog_count, 1),
	STATE_FIELD_END,
};

static bool serial_state_ok(const void *p)
{
	const struct serial *in = p;

	return state_bool_ok(&in->thr_pending) &&
	       in->fifo_head < FIFO_SIZE && in->fifo_count <= FIFO_SIZE &&
	       in->backlog_head < BACKLOG_SIZE && in->backlog_count <= BACKLOG_SIZE &&
	       !(in->lsr_errors & ~LSR_ERRORS) && !(in->msr_deltas & ~0x0fu);
}

void serial_save(struct serial *s, struct state_writer *w, uint32_t instance)
{
	pthread_mutex_lock(&s->lock);
	state_save_fields(w, STATE_SECTION_SERIAL, instance, SERIAL_STATE_VERSION,
			  serial_fields, s);
	pthread_mutex_unlock(&s->lock);
}

int serial_restore(struct serial *s, struct state_reader *r)
{
	int ret;

	pthread_mutex_lock(&s->lock);
	ret = state_restore_fields(r, SERIAL_STATE_VERSION, serial_fields, s, sizeof(*s),
				   serial_state_ok);
	if (!ret) {
		s->irq_level = -1;
		irq_update(s);
	}
	pthread_mutex_unlock(&s->lock);
	return ret;
}

void serial_destroy(struct serial *s)
{
	if (!s)
		return;
	io_bus_unregister(vm_pio_bus(s->vm), s->port);
	pthread_mutex_destroy(&s->lock);
	free(s);
}
