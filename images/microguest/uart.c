/*
 * The channel: COM1. Every port access is a VM exit (~25 us each under kvm_pvm), so bytes move
 * 16 at a time: reads check LSR.DR, then drain the receive FIFO with one `rep insb`; writes
 * wait for LSR.THRE (empty FIFO), then fill it with one `rep outsb`. Waiting for a request is
 * chan.c's: the receive interrupt (IER.ERBFI, 1-byte trigger) reaches the guest as an NMI
 * (cpu_route_wakeup) and ends the idle hlt (cpu_idle).
 */
#include "microguest.h"

#define RBR 0
#define THR 0
#define IER 1
#define FCR 2
#define LCR 3
#define MCR 4
#define LSR 5
#define LSR_DR 0x01
#define LSR_THRE 0x20
#define FIFO_SIZE 16
#define IER_ERBFI 0x01

void uart_init(void)
{
    if (chan_host_has(HOST_UART_READY)) { /* the host's COM1 needs IER only (one exit) */
        if (!chan_host_has(HOST_NO_IOAPIC))
            cpu_route_wakeup(cpu_apic_id());
        outb(MG_SERIAL + IER, IER_ERBFI);
        return;
    }
    outb(MG_SERIAL + IER, 0x00);
    outb(MG_SERIAL + LCR, 0x80); /* divisor latch: 115200 baud */
    outb(MG_SERIAL + 0, 0x01);
    outb(MG_SERIAL + 1, 0x00);
    outb(MG_SERIAL + LCR, 0x03); /* 8N1 */
    /* FIFOs on, cleared, 1-byte trigger: the first byte of a request raises the interrupt. */
    outb(MG_SERIAL + FCR, 0x07);
    outb(MG_SERIAL + MCR, 0x0b); /* DTR, RTS, OUT2 (the IRQ line's gate on a PC) */
    if (!chan_host_has(HOST_NO_IOAPIC))
        cpu_route_wakeup(cpu_apic_id());
    outb(MG_SERIAL + IER, IER_ERBFI);
}

/*
 * Input is drained 16 bytes per exit: once LSR says data is ready, one `rep insb` reads RBR
 * FIFO_SIZE times. A 16550 in FIFO mode under QEMU (and the KVM engine's UART) reads 0 from
 * an empty FIFO, so NUL bytes are dropped: they are never part of a request. Bytes after a
 * '\n' stay in `pending` for the next line.
 */
static u8 pending[FIFO_SIZE];
static usize pending_at, pending_len;

/*
 * One `rep insb` of FIFO_SIZE reads drains the receive FIFO, one exit, without asking LSR
 * first: a 16550 in FIFO mode under QEMU, and the KVM engine's UART, read 0 from an empty
 * FIFO, so NUL bytes are dropped (they are never part of a request, and the host's wake-up
 * byte is a NUL). 1 when a byte other than NUL came. Draining also lowers the IRQ line, so
 * the next byte is a new edge, i.e. a new wake-up NMI.
 */
static u8 pending[FIFO_SIZE];
static usize pending_at, pending_len;

int uart_drain(void)
{
    u8 *dst = pending;
    usize count = FIFO_SIZE;
    __asm__ volatile("rep insb" : "+D"(dst), "+c"(count) : "d"(MG_SERIAL + RBR) : "memory");
    pending_at = 0;
    pending_len = FIFO_SIZE;
    for (usize i = 0; i < FIFO_SIZE; i++)
        if (pending[i])
            return 1;
    return 0;
}

/*
 * Move received bytes into the line; 1 once it holds a whole line, without its '\n' (and a
 * '\r' before it). A line longer than the buffer is read to its end and reported through
 * too_long, so the reply stays in step with the request. Bytes after a '\n' stay pending.
 */
int uart_take_line(struct line *l)
{
    while (pending_at < pending_len) {
        u8 c = pending[pending_at++];
        if (!c)
            continue;
        if (c == '\n') {
            if (l->n && l->buf[l->n - 1] == '\r')
                l->n--;
            return 1;
        }
        if (l->n < sizeof l->buf)
            l->buf[l->n++] = (char)c;
        else
            l->too_long = 1;
    }
    return 0;
}

void uart_write(const char *s, usize n)
{
    while (n) {
        while (!(inb(MG_SERIAL + LSR) & LSR_THRE))
            __asm__ volatile("pause");
        usize burst = n < FIFO_SIZE ? n : FIFO_SIZE;
        n -= burst;
        __asm__ volatile("rep outsb" : "+S"(s), "+c"(burst) : "d"(MG_SERIAL + THR) : "memory");
    }
}

/* No LSR.THRE wait: the byte goes into an empty FIFO (the host reads the line while it waits). */
void uart_doorbell(void) { outb(MG_SERIAL + THR, '\n'); }
