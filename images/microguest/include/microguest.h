/* Types, port I/O and the interfaces between the micro guest's C files. */
#ifndef MICROGUEST_H
#define MICROGUEST_H

#include "layout.h"

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef long long s64;
typedef unsigned long usize;

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline void outl(u16 port, u32 v) { __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port)); }
static inline u8 inb(u16 port)
{
    u8 v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

/* uart.c: 16550 on COM1; the receive interrupt wakes an idle guest */
#define MAX_LINE 127
struct line {
    char buf[MAX_LINE + 1]; /* room for a '\r' before the '\n' */
    usize n;
    int too_long;
};
void uart_init(void);
int uart_drain(void);                /* the receive FIFO, one exit: 1 if bytes came */
int uart_take_line(struct line *l);  /* 1 once l holds a whole line (no '\r\n'); no exits */
void uart_write(const char *s, usize n);
void uart_doorbell(void);            /* one byte ('\n'), one exit: "look at the mailbox" */

static inline u64 rdtsc(void)
{
    u32 lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return (u64)hi << 32 | lo;
}
static inline void barrier(void) { __asm__ volatile("" : : : "memory"); }

/* mem.c: the pattern and the range hash of qmpgmem/guest/protocol.py */
void mem_pattern_fill(u64 *dst, u64 nwords, u64 seed, u64 offset);
u64 mem_range_hash(const u64 *src, u64 nwords);
u64 mem_first_nonzero(const u64 *src, u64 nwords); /* index, or nwords when all zero */

/* cpu.c: CPL3 setup and the gates */
enum mg_vendor { MG_VENDOR_OTHER, MG_VENDOR_AMD, MG_VENDOR_INTEL };
void cpu_setup(void);
enum mg_vendor cpu_vendor(void);
int cpu_cpl(void);
int cpu_on_kvm(void); /* a KVM hypercall can be made (not TCG, not bare metal) */
s64 cpu_hypercall(u64 nr, u64 a0, u64 a1, u64 a2);
void cpu_route_wakeup(u32 apic_id); /* COM1's IRQ -> NMI to this vCPU (IOAPIC) */
u32 cpu_wakeups(void);              /* wake-up NMIs so far */
void cpu_idle(u32 seen);            /* hlt until a wake-up after `seen` */

/* main.c: one request into a reply (no '\n'); an AP runs jobs through it too */
struct reply {
    char buf[128];
    usize n;
};
void reply_add(struct reply *r, const char *s);
void mg_handle(const char *line, usize n, struct reply *r, int on_ap);

/* chan.c: the BSP's next request, from the mailbox or COM1, sleeping in between */
enum chan_source { CHAN_SERIAL, CHAN_MBOX };
void chan_init(void);
int chan_host_has(u32 flag); /* the host's offer in the mailbox said so (chan.c: HOST_*) */
#define HOST_NO_IOAPIC 0x1
#define HOST_UART_READY 0x2
void chan_hello(const struct reply *r); /* the HELLO line: the mailbox if offered, else COM1 */
enum chan_source chan_next(struct line *l);
void chan_reply(enum chan_source from, const struct reply *r);

/* smp.c: the APs and their mailboxes (docs/guest-protocol.md, "Several vCPUs") */
void smp_start(u64 vcpus, struct reply *r);           /* SMP: bring up APs 1..vcpus-1 */
const char *smp_arm(u64 k, const char *line, usize n); /* NULL, or the ERR text */
u32 smp_go(void);                                      /* run all armed jobs, wait: count */
int smp_result(u64 k, struct reply *r);                /* "@<apic> <reply>"; 0: none */
u32 cpu_apic_id(void);

/* fmt.c: numbers on the wire */
int fmt_parse_hex(const char *s, usize n, u64 *out);
usize fmt_hex(char *dst, u64 v, int width);
usize fmt_dec(char *dst, s64 v);

void *memset(void *dst, int c, usize n);
void *memcpy(void *dst, const void *src, usize n);

#endif
