/*
 * The protocol loop of qmpgmem/guest/protocol.py, at CPL3: HELLO once per boot, then one
 * reply line per request line. Requests carry guest-physical addresses; with the identity
 * map they are pointers. Nothing outside [MG_SYS_SIZE, 4 GiB) is touched for a request.
 * Only the BSP reads and writes the serial line; mg_handle() is also what an AP runs for a
 * job the BSP hands it (smp.c), with the reply going into the job's mailbox.
 */
#include "microguest.h"

#define MAX_TOKENS 6
#define MAX_SPLIT 10 /* room for "ARM <k>" or "@<k>" before a full request */
#define KVM_HC_MAP_GPA_RANGE 12
#define KVM_MAP_GPA_RANGE_ENCRYPTED (1 << 4)

struct token {
    const char *s;
    usize n;
};

void reply_add(struct reply *r, const char *s)
{
    while (*s && r->n < sizeof r->buf - 1)
        r->buf[r->n++] = *s++;
}
#define add reply_add

/* Replace the reply with the text s (each vCPU has its own struct reply: no shared state). */
static int send_text(struct reply *r, const char *s)
{
    r->n = 0;
    add(r, s);
    return 0;
}

static int is(const struct token *t, const char *word)
{
    usize i = 0;
    for (; i < t->n; i++)
        if (word[i] != t->s[i])
            return 0;
    return word[i] == 0;
}

static usize split(const char *line, usize n, struct token *tok, usize max)
{
    usize count = 0, i = 0;
    while (i < n) {
        while (i < n && (line[i] == ' ' || line[i] == '\t'))
            i++;
        if (i == n)
            break;
        usize start = i;
        while (i < n && line[i] != ' ' && line[i] != '\t')
            i++;
        if (count == max)
            return max + 1;
        tok[count].s = line + start;
        tok[count].n = i - start;
        count++;
    }
    return count;
}

/* Parse tok[1..count) as hex into v[]; 0 when one of them is not a number. */
static int numbers(const struct token *tok, usize count, u64 *v)
{
    for (usize i = 1; i < count; i++)
        if (!fmt_parse_hex(tok[i].s, tok[i].n, &v[i - 1]))
            return 0;
    return 1;
}

/* NULL when [gpa, gpa+size) is a range requests may use, else the ERR text. */
static const char *check_range(u64 gpa, u64 size, u64 align)
{
    if (gpa % align || size % align)
        return "ERR unaligned";
    if (gpa < MG_SYS_SIZE || gpa >= MG_MEM_LIMIT || size > MG_MEM_LIMIT - gpa)
        return "ERR out of range";
    return 0;
}

static void hello(void)
{
    static const char *const names[] = {"other", "AMD", "Intel"};
    struct reply r = {.n = 0};
    add(&r, "HELLO microguest ");
    r.n += fmt_dec(r.buf + r.n, MG_PROTOCOL_VERSION);
    add(&r, " sys=0-");
    r.n += fmt_hex(r.buf + r.n, MG_SYS_SIZE, 1);
    add(&r, " cpl=");
    r.n += fmt_dec(r.buf + r.n, cpu_cpl());
    add(&r, " vendor=");
    add(&r, names[cpu_vendor()]);
    add(&r, " mbox=");
    r.n += fmt_hex(r.buf + r.n, MG_MBOX, 1);
    chan_hello(&r);
}

static int handle(const char *line, usize n, struct reply *r, int on_ap)
{
    struct token tok[MAX_TOKENS];
    u64 v[MAX_TOKENS - 1];
    const char *err;
    usize count = split(line, n, tok, MAX_TOKENS);

    if (count == 0)
        return 0; /* blank lines get no reply */
    if (count > MAX_TOKENS)
        return send_text(r, "ERR too many arguments");
    if (is(&tok[0], "PING")) {
        send_text(r, count == 1 ? "OK PONG" : "ERR usage: PING");
    } else if (is(&tok[0], "WRITE")) {
        if (count != 5)
            return send_text(r, "ERR usage: WRITE <gpa> <size> <seed> <offset>");
        if (!numbers(tok, count, v))
            return send_text(r, "ERR bad number");
        if ((err = check_range(v[0], v[1], 8)) || (err = v[3] % 8 ? "ERR unaligned" : 0))
            return send_text(r, err);
        mem_pattern_fill((u64 *)(usize)v[0], v[1] / 8, v[2], v[3]);
        send_text(r, "OK");
    } else if (is(&tok[0], "HASH")) {
        if (count != 3)
            return send_text(r, "ERR usage: HASH <gpa> <size>");
        if (!numbers(tok, count, v))
            return send_text(r, "ERR bad number");
        if ((err = check_range(v[0], v[1], 8)))
            return send_text(r, err);
        add(r, "OK ");
        r->n += fmt_hex(r->buf + r->n, mem_range_hash((const u64 *)(usize)v[0], v[1] / 8), 16);
    } else if (is(&tok[0], "ZERO")) {
        if (count != 3)
            return send_text(r, "ERR usage: ZERO <gpa> <size>");
        if (!numbers(tok, count, v))
            return send_text(r, "ERR bad number");
        if ((err = check_range(v[0], v[1], 8)))
            return send_text(r, err);
        u64 i = mem_first_nonzero((const u64 *)(usize)v[0], v[1] / 8);
        if (i == v[1] / 8)
            return send_text(r, "OK ZERO");
        add(r, "OK NONZERO ");
        r->n += fmt_hex(r->buf + r->n, v[0] + i * 8, 1);
    } else if (is(&tok[0], "CONVERT")) {
        if (count != 4 || !(is(&tok[3], "P") || is(&tok[3], "S")))
            return send_text(r, "ERR usage: CONVERT <gpa> <size> <P|S>");
        if (!numbers(tok, 3, v))
            return send_text(r, "ERR bad number");
        if ((err = check_range(v[0], v[1], 4096)))
            return send_text(r, err);
        if (!cpu_on_kvm()) /* vmcall/vmmcall would be #UD */
            return send_text(r, "ERR CONVERT needs KVM (no KVM hypervisor signature in CPUID)");
        u64 attrs = is(&tok[3], "P") ? KVM_MAP_GPA_RANGE_ENCRYPTED : 0; /* 4K page size */
        s64 ret = cpu_hypercall(KVM_HC_MAP_GPA_RANGE, v[0], v[1] / 4096, attrs);
        add(r, "OK RET ");
        r->n += fmt_dec(r->buf + r->n, ret);
    } else if (is(&tok[0], "EXIT")) {
        if (count != 2)
            return send_text(r, "ERR usage: EXIT <code>");
        if (!numbers(tok, count, v))
            return send_text(r, "ERR bad number");
        if (v[0] > 0xffffffffULL)
            return send_text(r, "ERR out of range");
        if (on_ap) /* an AP has no I/O bitmap; the BSP owns the ports */
            return send_text(r, "ERR EXIT runs on vCPU 0 only");
        /* No reply: QEMU exits with status (code << 1) | 1 once its main loop sees this. */
        outl(MG_DEBUG_EXIT, (u32)v[0]);
    } else {
        send_text(r, "ERR unknown command");
    }
    return 0;
}

void mg_handle(const char *line, usize n, struct reply *r, int on_ap)
{
    r->n = 0;
    handle(line, n, r, on_ap);
}

/* "@<k>" -> k, for the vCPU prefix; 0 when the token is not one. */
static int vcpu_prefix(const struct token *t, u64 *k)
{
    return t->n >= 2 && t->s[0] == '@' && fmt_parse_hex(t->s + 1, t->n - 1, k);
}

/*
 * The BSP's request: the vCPU requests of smp.c (SMP, ARM, GO, RESULT, @<k> ...) or one that
 * the BSP runs itself. A job line is the rest of the request after "ARM <k>" or "@<k>".
 */
static void bsp_request(const char *line, usize n, struct reply *r)
{
    struct token tok[MAX_SPLIT];
    u64 k;
    usize count = split(line, n, tok, MAX_SPLIT);

    r->n = 0;
    if (count == 0)
        return;
    if (count <= MAX_SPLIT && vcpu_prefix(&tok[0], &k) && count >= 2) {
        const char *job = tok[1].s;
        const char *err = smp_arm(k, job, (usize)(line + n - job));
        if (err)
            return (void)send_text(r, err);
        smp_go();
        smp_result(k, r);
    } else if (is(&tok[0], "ARM") && count <= MAX_SPLIT) {
        if (count < 3 || !fmt_parse_hex(tok[1].s, tok[1].n, &k))
            return (void)send_text(r, "ERR usage: ARM <vcpu> <request>");
        const char *job = tok[2].s;
        const char *err = smp_arm(k, job, (usize)(line + n - job));
        send_text(r, err ? err : "OK ARMED");
    } else if (is(&tok[0], "GO")) {
        if (count != 1)
            return (void)send_text(r, "ERR usage: GO");
        u32 jobs = smp_go();
        add(r, "OK GO ");
        r->n += fmt_hex(r->buf + r->n, jobs, 1);
    } else if (is(&tok[0], "RESULT")) {
        if (count != 2 || !fmt_parse_hex(tok[1].s, tok[1].n, &k))
            return (void)send_text(r, "ERR usage: RESULT <vcpu>");
        if (!smp_result(k, r))
            send_text(r, "ERR no result for that vCPU");
    } else if (is(&tok[0], "SMP")) {
        if (count != 2 || !fmt_parse_hex(tok[1].s, tok[1].n, &k))
            return (void)send_text(r, "ERR usage: SMP <vcpus>");
        smp_start(k, r);
    } else {
        handle(line, n, r, 0);
    }
}

void mg_main(void)
{
    struct line line;
    struct reply r;

    cpu_setup();
    chan_init();
    uart_init();
    hello();
    for (;;) {
        enum chan_source from = chan_next(&line);
        if (line.too_long || line.n > MAX_LINE)
            send_text(&r, "ERR line too long");
        else
            bsp_request(line.buf, line.n, &r);
        chan_reply(from, &r);
    }
}
