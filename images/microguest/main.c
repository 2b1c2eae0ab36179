/*
 * The protocol loop of qmpgmem/guest/protocol.py, at CPL3: HELLO once per boot, then one
 * reply line per request line. Requests carry guest-physical addresses; with the identity
 * map they are pointers. Nothing outside [MG_SYS_SIZE, 4 GiB) is touched for a request.
 */
#include "microguest.h"

#define MAX_LINE 127
#define MAX_TOKENS 6
#define KVM_HC_MAP_GPA_RANGE 12
#define KVM_MAP_GPA_RANGE_ENCRYPTED (1 << 4)

struct token {
    const char *s;
    usize n;
};

struct reply {
    char buf[96];
    usize n;
};

static void add(struct reply *r, const char *s)
{
    while (*s)
        r->buf[r->n++] = *s++;
}

static void send(struct reply *r)
{
    r->buf[r->n++] = '\n';
    uart_write(r->buf, r->n);
}

static int send_text(const char *s)
{
    struct reply r = {.n = 0};
    add(&r, s);
    send(&r);
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

static usize split(const char *line, usize n, struct token *tok)
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
        if (count == MAX_TOKENS)
            return MAX_TOKENS + 1;
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
    send(&r);
}

static int handle(const char *line, usize n)
{
    struct token tok[MAX_TOKENS];
    u64 v[MAX_TOKENS - 1];
    struct reply r = {.n = 0};
    const char *err;
    usize count = split(line, n, tok);

    if (count == 0)
        return 0; /* blank lines get no reply */
    if (count > MAX_TOKENS)
        return send_text("ERR too many arguments");
    if (is(&tok[0], "PING")) {
        send_text(count == 1 ? "OK PONG" : "ERR usage: PING");
    } else if (is(&tok[0], "WRITE")) {
        if (count != 5)
            return send_text("ERR usage: WRITE <gpa> <size> <seed> <offset>");
        if (!numbers(tok, count, v))
            return send_text("ERR bad number");
        if ((err = check_range(v[0], v[1], 8)) || (err = v[3] % 8 ? "ERR unaligned" : 0))
            return send_text(err);
        mem_pattern_fill((u64 *)(usize)v[0], v[1] / 8, v[2], v[3]);
        send_text("OK");
    } else if (is(&tok[0], "HASH")) {
        if (count != 3)
            return send_text("ERR usage: HASH <gpa> <size>");
        if (!numbers(tok, count, v))
            return send_text("ERR bad number");
        if ((err = check_range(v[0], v[1], 8)))
            return send_text(err);
        add(&r, "OK ");
        r.n += fmt_hex(r.buf + r.n, mem_range_hash((const u64 *)(usize)v[0], v[1] / 8), 16);
        send(&r);
    } else if (is(&tok[0], "ZERO")) {
        if (count != 3)
            return send_text("ERR usage: ZERO <gpa> <size>");
        if (!numbers(tok, count, v))
            return send_text("ERR bad number");
        if ((err = check_range(v[0], v[1], 8)))
            return send_text(err);
        u64 i = mem_first_nonzero((const u64 *)(usize)v[0], v[1] / 8);
        if (i == v[1] / 8)
            return send_text("OK ZERO");
        add(&r, "OK NONZERO ");
        r.n += fmt_hex(r.buf + r.n, v[0] + i * 8, 1);
        send(&r);
    } else if (is(&tok[0], "CONVERT")) {
        if (count != 4 || !(is(&tok[3], "P") || is(&tok[3], "S")))
            return send_text("ERR usage: CONVERT <gpa> <size> <P|S>");
        if (!numbers(tok, 3, v))
            return send_text("ERR bad number");
        if ((err = check_range(v[0], v[1], 4096)))
            return send_text(err);
        if (!cpu_on_kvm()) /* vmcall/vmmcall would be #UD */
            return send_text("ERR CONVERT needs KVM (no KVM hypervisor signature in CPUID)");
        u64 attrs = is(&tok[3], "P") ? KVM_MAP_GPA_RANGE_ENCRYPTED : 0; /* 4K page size */
        s64 ret = cpu_hypercall(KVM_HC_MAP_GPA_RANGE, v[0], v[1] / 4096, attrs);
        add(&r, "OK RET ");
        r.n += fmt_dec(r.buf + r.n, ret);
        send(&r);
    } else if (is(&tok[0], "EXIT")) {
        if (count != 2)
            return send_text("ERR usage: EXIT <code>");
        if (!numbers(tok, count, v))
            return send_text("ERR bad number");
        if (v[0] > 0xffffffffULL)
            return send_text("ERR out of range");
        /* No reply: QEMU exits with status (code << 1) | 1 once its main loop sees this. */
        outl(MG_DEBUG_EXIT, (u32)v[0]);
    } else {
        send_text("ERR unknown command");
    }
    return 0;
}

void mg_main(void)
{
    char line[MAX_LINE + 1]; /* room for a '\r' before the '\n' */
    int too_long;

    cpu_setup();
    uart_init();
    hello();
    for (;;) {
        usize n = uart_read_line(line, sizeof line, &too_long);
        if (too_long || n > MAX_LINE)
            send_text("ERR line too long");
        else
            handle(line, n);
    }
}
