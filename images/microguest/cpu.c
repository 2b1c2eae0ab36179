/*
 * CPL3 side of the machine setup: the identity map (into pages no table uses yet, see
 * layout.h) and the IDT are written here at native speed (all pages are user-writable), then
 * one CR3 load through the gate switches to the new tables. Also CPUID, the CPL, and the hypercall.
 */
#include "microguest.h"

extern const u64 mg_fault_stubs[32];
extern char mg_gate[], mg_nmi[];
extern volatile u32 mg_wakeups; /* NMIs taken (entry.S) */

static enum mg_vendor vendor;
static int use_vmmcall; /* AMD and Hygon (SVM) */
static int on_kvm;      /* CPUID hypervisor leaf says "KVMKVMKVM" */

static void set_gate(unsigned vec, const void *handler, unsigned dpl)
{
    u64 off = (u64)handler;
    u64 *gate = (u64 *)(usize)(MG_IDT + vec * 16);
    /* offset 15:0 | selector | present, DPL, 64-bit interrupt gate | offset 31:16 */
    gate[0] = (off & 0xffff) | ((u64)MG_SEL_CODE64 << 16) |
              ((u64)(0x8e | (dpl << 5)) << 40) | ((off >> 16 & 0xffff) << 48);
    gate[1] = off >> 32;
}

static void idt_setup(void)
{
    memset((void *)(usize)MG_IDT, 0, 256 * 16);
    for (unsigned v = 0; v < 32; v++)
        set_gate(v, (const void *)mg_fault_stubs[v], 0);
    set_gate(MG_VEC_NMI, mg_nmi, 0);
    set_gate(MG_VEC_GATE, mg_gate, 3);
    set_gate(MG_VEC_GATE_ALT, mg_gate, 3);
}

/* 0..4 GiB identity-mapped with 2 MiB user pages, A and D preset so no walker writes. */
static void paging_setup(void)
{
    u64 *pml4 = (u64 *)(usize)MG_IDMAP_PML4;
    u64 *pdpt = (u64 *)(usize)MG_IDMAP_PDPT;
    u64 *pd = (u64 *)(usize)MG_IDMAP_PD;
    for (u64 i = 0; i < 4 * 512; i++)
        pd[i] = (i << 21) | MG_PTE_LARGE;
    for (u64 i = 0; i < 512; i++)
        pdpt[i] = i < 4 ? (MG_IDMAP_PD + i * 4096) | MG_PTE_TABLE : 0;
    pml4[0] = MG_IDMAP_PDPT | MG_PTE_TABLE;
    for (u64 i = 1; i < 512; i++)
        pml4[i] = 0;
    __asm__ volatile("int3" : : "D"(MG_GATE_CR3), "S"((u64)MG_IDMAP_PML4) : "memory");
}

static void cpuid(u32 leaf, u32 *a, u32 *b, u32 *c, u32 *d)
{
    __asm__ volatile("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d) : "a"(leaf), "c"(0));
}

void cpu_setup(void)
{
    u32 a, b, c, d;
    /* I/O bitmap: every port allowed (see setup.S for why IOPL=3 is not enough). */
    memset((void *)(usize)(MG_TSS + 104), 0, 8192);
    idt_setup(); /* before the CR3 load, which goes through the gate */
    paging_setup();
    cpuid(0, &a, &b, &c, &d);
    if (b == 0x68747541 && d == 0x69746e65 && c == 0x444d4163) /* AuthenticAMD */
        vendor = MG_VENDOR_AMD;
    else if (b == 0x756e6547 && d == 0x49656e69 && c == 0x6c65746e) /* GenuineIntel */
        vendor = MG_VENDOR_INTEL;
    else
        vendor = MG_VENDOR_OTHER;
    use_vmmcall = vendor == MG_VENDOR_AMD ||
                  (b == 0x6f677948 && d == 0x6e65476e && c == 0x656e6975); /* HygonGenuine */
    cpuid(1, &a, &b, &c, &d);
    if (c & (1u << 31)) { /* a hypervisor is present */
        cpuid(0x40000000, &a, &b, &c, &d);
        on_kvm = b == 0x4b4d564b && c == 0x564b4d56 && d == 0x4d; /* "KVMKVMKVM\0\0\0" */
    }
}

int cpu_on_kvm(void) { return on_kvm; }

enum mg_vendor cpu_vendor(void) { return vendor; }

int cpu_cpl(void)
{
    u16 cs;
    __asm__ volatile("mov %%cs, %0" : "=r"(cs));
    return cs & 3;
}

/*
 * KVM hypercall ABI: rax = nr, rbx/rcx/rdx/rsi = a0..a3, result in rax. KVM answers
 * -KVM_EPERM to CPL>0, so the instruction runs in a DPL3 gate at CPL0: vmmcall on AMD,
 * (and Hygon), vmcall elsewhere.
 */
s64 cpu_hypercall(u64 nr, u64 a0, u64 a1, u64 a2)
{
    u64 ret = nr;
    u64 fn = use_vmmcall ? MG_GATE_VMMCALL : MG_GATE_VMCALL;
    __asm__ volatile("int3" : "+a"(ret) : "D"(fn), "b"(a0), "c"(a1), "d"(a2), "S"(0ULL) : "memory");
    return (s64)ret;
}

/*
 * Route COM1's IRQ to this vCPU as an NMI: IOAPIC redirection entry MG_COM1_GSI, delivery
 * mode NMI, edge, physical destination = our APIC ID. Written through the identity map at
 * CPL3 (MMIO: one exit each). Where no IOAPIC answers (the kvm engine) the writes go nowhere.
 */
void cpu_route_wakeup(u32 apic_id)
{
    volatile u32 *sel = (volatile u32 *)(usize)MG_IOAPIC_BASE;
    volatile u32 *win = (volatile u32 *)(usize)(MG_IOAPIC_BASE + 0x10);
    *sel = 0x10 + 2 * MG_COM1_GSI + 1;
    *win = apic_id << 24;
    *sel = 0x10 + 2 * MG_COM1_GSI;
    *win = 0x400 | MG_VEC_NMI; /* NMI, physical, active high, edge, unmasked */
}

u32 cpu_wakeups(void) { return mg_wakeups; }

/* Sleep until the next wake-up, unless one came after `seen` was read (see entry.S). */
void cpu_idle(u32 seen)
{
    __asm__ volatile("int3" : : "D"(MG_GATE_IDLE), "S"((u64)seen) : "memory");
}
