/*
 * Where the BSP's next request comes from, and how it waits for one: the mailbox page (one
 * exit per message) or COM1 (the text protocol, for humans and hosts without the page).
 *
 * Waiting: right after a reply the guest watches the mailbox for a while (memory only, no
 * exits: a scenario's next step usually follows at once), then sleeps (cpu_idle) until a
 * wake-up NMI from COM1. COM1 is read after each serial request and each wake-up, and
 * whenever the NMI count moved; never polled (a polling vCPU would hold QEMU's BQL against
 * the main loop that delivers the next byte). The NMI comes with the host's bytes of a serial
 * request, or with its NUL wake-up byte after posting to a sleeping guest's mailbox. The
 * `sleeping` word tells the host which of the two
 * it must do: set before the last look at the mailbox, with a full fence in between, so that
 * either the guest sees the request or the host sees the flag (and sends the wake-up byte).
 * The reply's doorbell works the same way in the other direction: the host watches the page
 * for a short while after posting (`host_polling`), and only once it has stopped watching
 * does the guest's reply need the doorbell byte, the one exit of the exchange.
 */
#include "microguest.h"

struct mg_mbox {
    volatile u32 req_seq;  /* 0x00 host: bumped after req/req_len are written */
    volatile u32 rep_seq;  /* 0x04 guest: = req_seq once rep/rep_len are written */
    volatile u32 req_len;  /* 0x08 host */
    volatile u32 rep_len;  /* 0x0c guest */
    volatile u32 sleeping; /* 0x10 guest: 1 from just before its idle hlt until it wakes */
    volatile u32 magic;    /* 0x14 guest: MBOX_MAGIC once the page is ready */
    volatile u32 host_polling; /* 0x18 host: 1 while it watches rep_seq (no doorbell needed) */
    volatile u32 hello_offer;  /* 0x1c host: HELLO_OFFER before the boot: "HELLO in here" */
    volatile u32 host_flags;   /* 0x20 host: HOST_* below, read with the offer */
    volatile u32 hello_len;    /* 0x24 guest: bytes of the HELLO line at 0x300 (0: none yet) */
    u8 reserved[0x100 - 0x28];
    char req[256];   /* 0x100 the request line, no '\n' */
    char rep[256];   /* 0x200 the reply line, no '\n' */
    char hello[256]; /* 0x300 the HELLO line, no '\n' (with the offer only) */
};

#define MBOX ((struct mg_mbox *)(usize)MG_MBOX)
#define MBOX_MAGIC 0x31584f4d /* "MOX1" */
#define HELLO_OFFER 0x4f4c4548 /* "HELO": the host maps this page and reads the HELLO here */
/* The host's devices need less (the kvm engine's): no IOAPIC to route the wake-up through, a
 * COM1 that needs no baud, line or FIFO programming (only IER, which tells it the guest sleeps). */
/* HOST_NO_IOAPIC, HOST_UART_READY: microguest.h */
/*
 * How long to watch the mailbox after a reply before sleeping: 2^22 TSC cycles (~1.6 ms at
 * 2.6 GHz: the host's own work between two steps, on a busy machine), and at least
 * WATCH_SPINS rounds, so that a vCPU thread the host preempted meanwhile still
 * watches for a while once it runs again.
 */
#define WATCH_CYCLES (1ULL << 22)
#define WATCH_SPINS 16384

static u32 drained_at = ~0u; /* the wake-up count when COM1 was last drained */
static struct line serial_line; /* may be half read when a mailbox request comes */
static enum chan_source last_from = CHAN_SERIAL; /* where the last request came from */
static int skip_watch; /* sleep at once in the next chan_next (after a mailbox HELLO) */

static u32 offered, host_flags; /* the host's offer, read before the page is cleared */

void chan_init(void)
{
    offered = MBOX->hello_offer == HELLO_OFFER;
    host_flags = offered ? MBOX->host_flags : 0;
    memset(MBOX, 0, sizeof *MBOX);
    barrier();
    MBOX->magic = MBOX_MAGIC;
}

int chan_host_has(u32 flag) { return (host_flags & flag) != 0; }

/*
 * The HELLO line: into the page and one doorbell when the host offered that before the boot
 * (one exit, not one per byte: string I/O is not batched on every KVM), else over COM1.
 */
void chan_hello(const struct reply *r)
{
    if (!offered) {
        char buf[sizeof r->buf + 1];
        memcpy(buf, r->buf, r->n);
        buf[r->n] = '\n';
        uart_write(buf, r->n + 1);
        return;
    }
    memcpy(MBOX->hello, r->buf, r->n);
    barrier();
    MBOX->hello_len = (u32)r->n;
    __asm__ volatile("mfence" : : : "memory");
    uart_doorbell();
    /*
     * The host sends nothing before it read the HELLO, and a byte after it raises an NMI
     * (or, in the kvm engine, resumes the halted guest): no drain needed before the first
     * sleep. Nor a watch (below): the host's own start continues now, and a spinning vCPU
     * would keep a core from it.
     */
    last_from = CHAN_MBOX;
    drained_at = cpu_wakeups();
    skip_watch = 1;
}

static int mbox_pending(void) { return MBOX->req_seq != MBOX->rep_seq; }

static enum chan_source take_mbox(struct line *l)
{
    u32 n = MBOX->req_len;
    barrier();
    l->too_long = n > MAX_LINE;
    l->n = l->too_long ? 0 : n;
    memcpy(l->buf, MBOX->req, l->n);
    return CHAN_MBOX;
}

enum chan_source chan_next(struct line *l)
{
    u64 watch_until = skip_watch ? 0 : rdtsc() + WATCH_CYCLES;
    u32 spins = skip_watch ? WATCH_SPINS : 0;
    skip_watch = 0;
    /*
     * After a serial request the next one is likely on COM1 already (the kvm engine raises no
     * NMI for it); after a mailbox request COM1 is read only once an NMI says a byte came,
     * so an exchange with an awake guest makes no exit at all but the doorbell's.
     */
    int check_uart = last_from == CHAN_SERIAL;
    for (;;) {
        u32 seen = cpu_wakeups();
        if (mbox_pending())
            return last_from = take_mbox(l);
        if (uart_take_line(&serial_line)) {
            last_from = CHAN_SERIAL;
            *l = serial_line;
            serial_line.n = 0;
            serial_line.too_long = 0;
            return CHAN_SERIAL;
        }
        if (check_uart || seen != drained_at) { /* a byte came (or may have) */
            drained_at = seen;
            check_uart = 0;
            if (uart_drain())
                continue;
        }
        if (spins < WATCH_SPINS || rdtsc() < watch_until) {
            spins++;
            __asm__ volatile("pause");
            continue;
        }
        MBOX->sleeping = 1;
        __asm__ volatile("mfence" : : : "memory");
        if (!mbox_pending())
            cpu_idle(seen);
        MBOX->sleeping = 0;
        check_uart = 1; /* woken by an NMI (COM1), or resumed by the kvm engine (no NMI) */
        spins = WATCH_SPINS;
        watch_until = 0; /* a spurious wake-up sleeps again at once */
    }
}

void chan_reply(enum chan_source from, const struct reply *r)
{
    if (from == CHAN_SERIAL) {
        if (r->n) {
            char buf[sizeof r->buf + 1];
            memcpy(buf, r->buf, r->n);
            buf[r->n] = '\n';
            uart_write(buf, r->n + 1);
        }
        return;
    }
    memcpy(MBOX->rep, r->buf, r->n);
    MBOX->rep_len = (u32)r->n;
    barrier();
    MBOX->rep_seq = MBOX->req_seq;
    __asm__ volatile("mfence" : : : "memory");
    if (!MBOX->host_polling)
        uart_doorbell();
}
