/*
 * The channel: COM1. Every port access is a VM exit (~25 us each under kvm_pvm), so bytes move
 * 16 at a time: reads wait for LSR.DR, then drain the receive FIFO with one `rep insb`; writes
 * wait for LSR.THRE (empty FIFO), then fill it with one `rep outsb`. Waiting for the first
 * byte of a request is a sleep, not a poll: the receive interrupt (IER.ERBFI, 1-byte trigger)
 * reaches the guest as an NMI (cpu_route_wakeup) and ends the idle hlt (cpu_idle).
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
/* LSR polls while the rest of a line is on its way, before the guest sleeps again. */
#define MID_LINE_POLLS 64

void uart_init(void)
{
    outb(MG_SERIAL + IER, 0x00);
    outb(MG_SERIAL + LCR, 0x80); /* divisor latch: 115200 baud */
    outb(MG_SERIAL + 0, 0x01);
    outb(MG_SERIAL + 1, 0x00);
    outb(MG_SERIAL + LCR, 0x03); /* 8N1 */
    /* FIFOs on, cleared, 1-byte trigger: the first byte of a request raises the interrupt. */
    outb(MG_SERIAL + FCR, 0x07);
    outb(MG_SERIAL + MCR, 0x0b); /* DTR, RTS, OUT2 (the IRQ line's gate on a PC) */
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
 * Wait for received data. Between requests (mid_line 0) the guest sleeps at once when LSR
 * shows nothing; inside a line it polls a little first, since the rest follows in microseconds.
 * The wake-up count is read before LSR, so a byte that arrives after the check ends the sleep.
 */
static void uart_fill(int mid_line)
{
    usize polls = mid_line ? MID_LINE_POLLS : 0;
    for (;;) {
        u32 seen = cpu_wakeups();
        if (inb(MG_SERIAL + LSR) & LSR_DR)
            break;
        if (polls) {
            polls--;
            __asm__ volatile("pause");
        } else {
            cpu_idle(seen);
        }
    }
    u8 *dst = pending;
    usize count = FIFO_SIZE;
    __asm__ volatile("rep insb" : "+D"(dst), "+c"(count) : "d"(MG_SERIAL + RBR) : "memory");
    pending_at = 0;
    pending_len = FIFO_SIZE;
}

static u8 uart_getc(int mid_line)
{
    for (;;) {
        while (pending_at < pending_len) {
            u8 c = pending[pending_at++];
            if (c)
                return c;
        }
        uart_fill(mid_line);
    }
}

/*
 * One line without its '\n' (a '\r' before it is dropped). A line longer than cap is read to
 * its end and reported through *too_long so the reply stays in step with the request.
 */
usize uart_read_line(char *buf, usize cap, int *too_long)
{
    usize n = 0;
    *too_long = 0;
    for (;;) {
        u8 c = uart_getc(n > 0 || *too_long);
        if (c == '\n')
            break;
        if (n < cap)
            buf[n++] = (char)c;
        else
            *too_long = 1;
    }
    if (n && buf[n - 1] == '\r')
        n--;
    return n;
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
