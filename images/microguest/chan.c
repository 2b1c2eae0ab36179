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
    u8 reserved[0x100 - 0x1c];
    char req[256]; /* 0x100 the request line, no '\n' */
    char rep[256]; /* 0x200 the reply line, no '\n' */
};

#define MBOX ((struct mg_mbox *)(usize)MG_MBOX)
#define MBOX_MAGIC 0x31584f4d /* "MOX1" */
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

void chan_init(void)
{
    memset(MBOX, 0, sizeof *MBOX);
    barrier();
    MBOX->magic = MBOX_MAGIC;
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
    u64 watch_until = rdtsc() + WATCH_CYCLES;
    u32 spins = 0;
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
