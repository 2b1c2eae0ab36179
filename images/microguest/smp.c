/*
 * Several vCPUs: the BSP (vCPU 0) owns the serial line and hands jobs to the APs through one
 * mailbox per vCPU in guest memory. A job is a request line (as on the wire); the vCPU runs
 * it with mg_handle() and leaves the reply in its mailbox. ARM fills mailboxes, GO releases
 * every armed job at once (the BSP runs its own, if armed, meanwhile) and waits for all.
 *
 * Bring-up (SMP): INIT + SIPI to APIC ID k through the xAPIC page, from CPL3 like everything
 * else; the AP's path is smp.S. vCPU index k is APIC ID k (QEMU -smp and the kvm engine
 * number them so); each AP reports its real APIC ID (the xAPIC ID register) and replies carry it.
 */
#include "microguest.h"

#define APIC_ID 0x20
#define APIC_SVR 0xf0
#define APIC_ICR_LO 0x300
#define APIC_ICR_HI 0x310
#define ICR_INIT 0x4500 /* INIT, level assert */
#define ICR_SIPI 0x4600 /* start-up, vector in bits 7:0 */

enum { MB_EMPTY, MB_ARMED, MB_GO, MB_DONE };

struct mailbox {
    volatile u32 state;
    volatile u32 alive; /* set by the AP once it waits for jobs */
    u32 apic;
    usize n;
    char line[MAX_LINE + 1];
    struct reply reply;
} __attribute__((aligned(64)));

static struct mailbox mbox[MG_MAX_CPUS];
static u32 online = 1; /* vCPUs 0..online-1 run the job loop (the BSP always) */
u32 mg_ap_booting;      /* read by smp.S: which vCPU index the AP being started is */

extern const char mg_ap_tramp[], mg_ap_tramp_end[];

static void apic_write(u32 reg, u32 v) { *(volatile u32 *)(usize)(MG_APIC_BASE + reg) = v; }

/*
 * The xAPIC ID register, not CPUID.1:EBX: under kvm_pvm CPUID at CPL3 may run natively and
 * report the host CPU the vCPU thread happens to be on; an MMIO read always reaches the VMM.
 */
u32 cpu_apic_id(void) { return *(volatile u32 *)(usize)(MG_APIC_BASE + APIC_ID) >> 24; }

/* TSS k (RSP0 = its CPL0 stack, no I/O bitmap) and its descriptor at GDT 0x30 + 16*k. */
static void ap_tables(u32 k)
{
    u8 *tss = (u8 *)(usize)(MG_AP_TSS + k * 128);
    u64 base = (u64)(usize)tss;
    memset(tss, 0, 128);
    *(u64 *)(tss + 4) = MG_AP_KSTACK + (u64)(k + 1) * MG_AP_KSTACK_SIZE;
    *(u16 *)(tss + 102) = 104; /* I/O bitmap offset past the limit: none */
    u64 *desc = (u64 *)(usize)(MG_GDT + MG_SEL_TSS + 16 * k);
    desc[0] = 103 | (base & 0xffffff) << 16 | 0x89ULL << 40 | (base >> 24 & 0xff) << 56;
    desc[1] = base >> 32;
}

static int wait_alive(u32 k, u64 cycles)
{
    u64 t0 = rdtsc();
    while (!mbox[k].alive)
        if (rdtsc() - t0 > cycles)
            return 0;
    return 1;
}

static int ap_start(u32 k)
{
    ap_tables(k);
    mbox[k].alive = 0;
    mg_ap_booting = k;
    barrier();
    apic_write(APIC_ICR_HI, k << 24);
    apic_write(APIC_ICR_LO, ICR_INIT);
    apic_write(APIC_ICR_HI, k << 24);
    apic_write(APIC_ICR_LO, ICR_SIPI | MG_AP_SIPI_VECTOR);
    if (wait_alive(k, 1ULL << 29))
        return 1;
    apic_write(APIC_ICR_HI, k << 24); /* a second SIPI, as the MP spec's sequence has */
    apic_write(APIC_ICR_LO, ICR_SIPI | MG_AP_SIPI_VECTOR);
    return wait_alive(k, 1ULL << 33);
}

void smp_start(u64 vcpus, struct reply *r)
{
    if (vcpus < 1 || vcpus > MG_MAX_CPUS) {
        reply_add(r, "ERR out of range");
        return;
    }
    if (online < vcpus) {
        memcpy((void *)(usize)MG_AP_TRAMP, mg_ap_tramp, (usize)(mg_ap_tramp_end - mg_ap_tramp));
        apic_write(APIC_SVR, 0x1ff); /* software-enable the BSP's APIC, spurious vector 0xff */
    }
    mbox[0].apic = cpu_apic_id();
    while (online < vcpus) {
        if (!ap_start(online)) {
            reply_add(r, "ERR vCPU ");
            r->n += fmt_hex(r->buf + r->n, online, 1);
            reply_add(r, " did not start");
            return;
        }
        online++;
    }
    reply_add(r, "OK SMP");
    for (u32 k = 0; k < vcpus; k++) {
        reply_add(r, " ");
        r->n += fmt_hex(r->buf + r->n, mbox[k].apic, 1);
    }
}

const char *smp_arm(u64 k, const char *line, usize n)
{
    if (k >= online)
        return "ERR no such vCPU (not started)";
    if (mbox[k].state != MB_EMPTY)
        return "ERR vCPU busy (already armed or its result not read)";
    if (n > MAX_LINE)
        return "ERR line too long";
    memcpy(mbox[k].line, line, n);
    mbox[k].n = n;
    mbox[k].state = MB_ARMED;
    return 0;
}

u32 smp_go(void)
{
    u32 jobs = 0;
    for (u32 k = 1; k < online; k++) /* release the APs first, then work on our own */
        if (mbox[k].state == MB_ARMED) {
            barrier();
            mbox[k].state = MB_GO;
            jobs++;
        }
    if (mbox[0].state == MB_ARMED) {
        mbox[0].apic = cpu_apic_id();
        mg_handle(mbox[0].line, mbox[0].n, &mbox[0].reply, 0);
        mbox[0].state = MB_DONE;
        jobs++;
    }
    for (u32 k = 1; k < online; k++)
        while (mbox[k].state == MB_GO)
            __asm__ volatile("pause" ::: "memory");
    return jobs;
}

int smp_result(u64 k, struct reply *r)
{
    r->n = 0;
    if (k >= online || mbox[k].state != MB_DONE)
        return 0;
    reply_add(r, "@");
    r->n += fmt_hex(r->buf + r->n, mbox[k].apic, 1);
    reply_add(r, " ");
    struct reply *job = &mbox[k].reply;
    for (usize i = 0; i < job->n && r->n < sizeof r->buf - 1; i++)
        r->buf[r->n++] = job->buf[i];
    barrier();
    mbox[k].state = MB_EMPTY;
    return 1;
}

/* An AP's life after smp.S: report, then run the jobs of its mailbox forever. */
void mg_ap_main(u32 k)
{
    struct mailbox *m = &mbox[k];
    m->apic = cpu_apic_id();
    m->state = MB_EMPTY;
    barrier();
    m->alive = 1;
    for (;;) {
        while (m->state != MB_GO)
            __asm__ volatile("pause" ::: "memory");
        barrier();
        mg_handle(m->line, m->n, &m->reply, 1);
        barrier();
        m->state = MB_DONE;
    }
}
