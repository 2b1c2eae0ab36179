/*
 * Runs at CPL0 after an exception (a guest bug, or a request that faulted): one line on the
 * channel so the host sees why the guest stopped answering, then entry.S halts the vCPU.
 */
#include "microguest.h"

struct mg_fault_frame {
    u64 vector, error, rip, cs, rflags, rsp, ss;
};

static usize put(char *dst, const char *s)
{
    usize n = 0;
    while (s[n]) {
        dst[n] = s[n];
        n++;
    }
    return n;
}

void mg_fault_report(const struct mg_fault_frame *f)
{
    char line[160];
    usize n = 0;
    u64 cr2;
    __asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
    n += put(line + n, "FAULT vec=");
    n += fmt_hex(line + n, f->vector, 1);
    n += put(line + n, " err=");
    n += fmt_hex(line + n, f->error, 1);
    n += put(line + n, " rip=");
    n += fmt_hex(line + n, f->rip, 1);
    n += put(line + n, " cs=");
    n += fmt_hex(line + n, f->cs, 1);
    n += put(line + n, " rflags=");
    n += fmt_hex(line + n, f->rflags, 1);
    n += put(line + n, " rsp=");
    n += fmt_hex(line + n, f->rsp, 1);
    n += put(line + n, " cr2=");
    n += fmt_hex(line + n, cr2, 1);
    line[n++] = '\n';
    uart_write(line, n);
}
