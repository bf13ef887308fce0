/*
 * libFuzzer harness for the helper's policy parser, parse_policy(text, length, ...).
 *
 * Input: the raw bytes of a policy file (at most MAX_POLICY_BYTES, as the helper reads no more).
 * A parsed policy must satisfy the invariants (<= MAX_RULES rules on increasing lines, <= MAX_VALUES
 * values per key, port ranges low <= high <= 65535, prefixes within their family's width, only known
 * kinds, families and options, valid device names), must parse the same with a newline appended, must survive a round trip
 * through its canonical text, and policy_decision() for fixed requests and callers must agree with
 * an independent bit-by-bit reference.
 */
#include "fuzz_common.h"

static bool same_rule(const struct rule *a, const struct rule *b, bool compare_line)
{
    if (a->allow != b->allow || (compare_line && a->line != b->line) || a->kinds != b->kinds ||
        a->families != b->families || a->n_users != b->n_users || a->n_groups != b->n_groups ||
        a->n_ports != b->n_ports || a->n_addresses != b->n_addresses)
        return false;
    for (unsigned i = 0; i < a->n_users; i++)
        if (a->users[i] != b->users[i])
            return false;
    for (unsigned i = 0; i < a->n_groups; i++)
        if (a->groups[i] != b->groups[i])
            return false;
    for (unsigned i = 0; i < a->n_ports; i++)
        if (a->ports[i].low != b->ports[i].low || a->ports[i].high != b->ports[i].high)
            return false;
    for (unsigned i = 0; i < a->n_addresses; i++)
        if (a->addresses[i].bits != b->addresses[i].bits ||
            a->addresses[i].address.family != b->addresses[i].address.family ||
            memcmp(a->addresses[i].address.bytes, b->addresses[i].address.bytes, 16) != 0)
            return false;
#if FUZZ_HAS_OPTIONS
    if (a->has_options != b->has_options || a->options != b->options ||
        a->n_devices != b->n_devices)
        return false;
    for (unsigned i = 0; i < a->n_devices; i++)
        if (strncmp(a->devices[i], b->devices[i], IFNAMSIZ) != 0)
            return false;
#endif
    return true;
}

static bool same_policy(const struct policy *a, const struct policy *b, bool compare_lines)
{
    if (a->count != b->count)
        return false;
    for (unsigned i = 0; i < a->count; i++)
        if (!same_rule(&a->rules[i], &b->rules[i], compare_lines))
            return false;
    return true;
}

/* Appends to OUT[*LENGTH], or returns false when it would not fit. */
static bool append(char *out, size_t size, size_t *length, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static bool append(char *out, size_t size, size_t *length, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out + *length, size - *length, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= size - *length)
        return false;
    *length += (size_t)n;
    return true;
}

/* The canonical line of RULE, or false if it would be longer than a policy line may be. */
static bool format_rule(const struct rule *rule, char *out, size_t size)
{
    size_t length = 0;
    bool ok = append(out, size, &length, "%s", rule->allow ? "allow" : "deny");
    for (unsigned i = 0; ok && i < rule->n_users; i++)
        ok = append(out, size, &length, "%s%u", i == 0 ? " user=" : ",", (unsigned)rule->users[i]);
    for (unsigned i = 0; ok && i < rule->n_groups; i++)
        ok = append(out, size, &length, "%s%u", i == 0 ? " group=" : ",",
                    (unsigned)rule->groups[i]);
    const char *separator = " kind=";
    for (size_t i = 0; ok && i < COUNT(kind_names); i++)
        if (rule->kinds & kind_names[i].bit) {
            ok = append(out, size, &length, "%s%s", separator, kind_names[i].name);
            separator = ",";
        }
    separator = " family=";
    for (size_t i = 0; ok && i < COUNT(family_names); i++)
        if (rule->families & family_names[i].bit) {
            ok = append(out, size, &length, "%s%s", separator, family_names[i].name);
            separator = ",";
        }
    for (unsigned i = 0; ok && i < rule->n_ports; i++) {
        const struct port_range *range = &rule->ports[i];
        ok = range->low == range->high
                 ? append(out, size, &length, "%s%u", i == 0 ? " port=" : ",",
                          (unsigned)range->low)
                 : append(out, size, &length, "%s%u-%u", i == 0 ? " port=" : ",",
                          (unsigned)range->low, (unsigned)range->high);
    }
    for (unsigned i = 0; ok && i < rule->n_addresses; i++) {
        const struct prefix *prefix = &rule->addresses[i];
        char address[INET6_ADDRSTRLEN];
        fuzz_format_address(&prefix->address, address, sizeof address);
        ok = append(out, size, &length, "%s%s/%u", i == 0 ? " addr=" : ",", address, prefix->bits);
    }
#if FUZZ_HAS_OPTIONS
    separator = " options=";
    for (size_t i = 0; ok && i < COUNT(option_names); i++)
        if (rule->options & option_names[i].bit) {
            ok = append(out, size, &length, "%s%s", separator, option_names[i].name);
            separator = ",";
        }
    for (unsigned i = 0; ok && i < rule->n_devices; i++)
        ok = append(out, size, &length, "%s%.*s", i == 0 ? " device=" : ",", IFNAMSIZ,
                    rule->devices[i]);
#endif
    return ok && length <= MAX_POLICY_LINE && append(out, size, &length, "\n");
}

static void fuzz_check_round_trip(const struct policy *policy)
{
    static char text[MAX_RULES * (MAX_POLICY_LINE + 1) + 1];
    static struct policy again;
    char line[MAX_POLICY_LINE * 2];
    size_t length = 0;
    reason why;
    for (unsigned i = 0; i < policy->count; i++) {
        if (!format_rule(&policy->rules[i], line, sizeof line))
            return;                   /* the canonical form of this rule is too long: skip */
        size_t n = strlen(line);
        memcpy(text + length, line, n);
        length += n;
    }
    CHECK(parse_policy(text, length, &again, why), "the canonical policy does not parse: %s\n%.*s",
          why, (int)length, text);
    CHECK(same_policy(policy, &again, false), "the canonical policy parses to another:\n%.*s",
          (int)length, text);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_make_fixed();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct policy policy, newline;
    static char copy[MAX_POLICY_BYTES + 2];
    reason why;

    if (size > MAX_POLICY_BYTES)      /* load_policy() refuses a larger file before parsing */
        return -1;
    fuzz_make_fixed();
    memset(why, 'x', sizeof why);
    bool ok = parse_policy((const char *)data, size, &policy, why);
    if (!ok) {
        fuzz_check_reason(why);
        return 0;
    }
    fuzz_check_policy(&policy, fuzz_count_lines(data, size));
    for (size_t c = 0; c < COUNT(fixed_callers); c++)
        for (size_t s = 0; s < COUNT(fixed_sockets); s++)
            fuzz_check_decision(&policy, &fixed_callers[c], &fixed_sockets[s]);

    /* A final newline changes nothing. */
    memcpy(copy, data, size);
    copy[size] = '\n';
    CHECK(parse_policy(copy, size + 1, &newline, why), "fails with a newline appended: %s", why);
    CHECK(same_policy(&policy, &newline, true), "another policy with a newline appended");

    fuzz_check_round_trip(&policy);
    return 0;
}
