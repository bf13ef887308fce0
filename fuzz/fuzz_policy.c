/*
 * libFuzzer harness for the helper's policy parser, parse_policy(text, length, ...).
 *
 * Input: the raw bytes of a policy file (at most MAX_POLICY_BYTES, as the helper reads no more).
 * A parsed policy must satisfy the invariants (<= MAX_RULES rules on increasing lines, <= MAX_VALUES
 * values per key, ranges low <= high within their maximum, prefixes within their family's width
 * with no host bits, only known kinds, families and options, valid device names), must end with a
 * newline and parse the same with one more, must survive a round trip
 * through its canonical text, and policy_decision() for fixed requests and callers must agree with
 * an independent bit-by-bit reference.
 */
#include "fuzz_common.h"

static bool same_ranges(const struct range *a, const struct range *b, unsigned count)
{
    for (unsigned i = 0; i < count; i++)
        if (a[i].low != b[i].low || a[i].high != b[i].high)
            return false;
    return true;
}

static bool same_rule(const struct rule *a, const struct rule *b, bool compare_line)
{
    if (a->allow != b->allow || (compare_line && a->line != b->line) || a->kinds != b->kinds ||
        a->families != b->families || a->has_options != b->has_options ||
        a->options != b->options || a->n_users != b->n_users || a->n_groups != b->n_groups ||
        a->n_ports != b->n_ports || a->n_addresses != b->n_addresses ||
        a->n_devices != b->n_devices || a->n_protos != b->n_protos ||
        a->n_ethertypes != b->n_ethertypes ||
        memcmp(a->n_bounds, b->n_bounds, sizeof a->n_bounds) != 0)
        return false;
    for (unsigned i = 0; i < OPTION_COUNT; i++)
        if (!same_ranges(a->bounds[i], b->bounds[i], a->n_bounds[i]))
            return false;
    for (unsigned i = 0; i < a->n_users; i++)
        if (a->users[i] != b->users[i])
            return false;
    for (unsigned i = 0; i < a->n_groups; i++)
        if (a->groups[i] != b->groups[i])
            return false;
    if (!same_ranges(a->ports, b->ports, a->n_ports) ||
        !same_ranges(a->protos, b->protos, a->n_protos) ||
        !same_ranges(a->ethertypes, b->ethertypes, a->n_ethertypes))
        return false;
    for (unsigned i = 0; i < a->n_addresses; i++)
        if (a->addresses[i].bits != b->addresses[i].bits ||
            a->addresses[i].address.family != b->addresses[i].address.family ||
            memcmp(a->addresses[i].address.bytes, b->addresses[i].address.bytes, 16) != 0)
            return false;
    for (unsigned i = 0; i < a->n_devices; i++)
        if (strncmp(a->devices[i], b->devices[i], IFNAMSIZ) != 0)
            return false;
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

static bool format_kinds(char *out, size_t size, size_t *length, unsigned bits)
{
    bool ok = true, first = true;
    for (size_t i = 0; ok && i < COUNT(kinds); i++)
        if (bits & kinds[i].bit) {
            ok = append(out, size, length, "%s%s", first ? " kind=" : ",", kinds[i].name);
            first = false;
        }
    return ok;
}

static bool format_families(char *out, size_t size, size_t *length, unsigned bits)
{
    bool ok = true, first = true;
    for (size_t i = 0; ok && i < COUNT(family_names); i++)
        if (bits & family_names[i].bit) {
            ok = append(out, size, length, "%s%s", first ? " family=" : ",", family_names[i].name);
            first = false;
        }
    return ok;
}

static bool format_options(char *out, size_t size, size_t *length, unsigned bits)
{
    bool ok = true, first = true;
    for (unsigned i = 0; ok && i < OPTION_COUNT; i++)
        if (bits & OPTION(i)) {
            ok = append(out, size, length, "%s%s", first ? " options=" : ",", options[i].name);
            first = false;
        }
    return ok;
}

static bool format_ranges(char *out, size_t size, size_t *length, const char *key,
                          const struct range *ranges, unsigned count, bool hex)
{
    bool ok = true;
    for (unsigned i = 0; ok && i < count; i++) {
        const char *separator = i == 0 ? key : ",";
        unsigned low = (unsigned)ranges[i].low, high = (unsigned)ranges[i].high;
        if (hex)
            ok = low == high ? append(out, size, length, "%s0x%x", separator, low)
                             : append(out, size, length, "%s0x%x-0x%x", separator, low, high);
        else
            ok = low == high ? append(out, size, length, "%s%u", separator, low)
                             : append(out, size, length, "%s%u-%u", separator, low, high);
    }
    return ok;
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
    ok = ok && format_kinds(out, size, &length, rule->kinds);
    ok = ok && format_families(out, size, &length, rule->families);
    ok = ok && format_ranges(out, size, &length, " port=", rule->ports, rule->n_ports, false);
    ok = ok && format_ranges(out, size, &length, " proto=", rule->protos, rule->n_protos, false);
    ok = ok && format_ranges(out, size, &length, " ethertype=", rule->ethertypes,
                             rule->n_ethertypes, true);
    for (unsigned i = 0; ok && i < rule->n_addresses; i++) {
        const struct prefix *prefix = &rule->addresses[i];
        char address[INET6_ADDRSTRLEN];
        fuzz_format_address(&prefix->address, address, sizeof address);
        ok = append(out, size, &length, "%s%s/%u", i == 0 ? " addr=" : ",", address, prefix->bits);
    }
    ok = ok && format_options(out, size, &length, rule->options);
    for (unsigned i = 0; ok && i < OPTION_COUNT; i++) {
        char key[24];
        (void)snprintf(key, sizeof key, " %s=", options[i].name);
        ok = format_ranges(out, size, &length, key, rule->bounds[i], rule->n_bounds[i], false);
    }
    for (unsigned i = 0; ok && i < rule->n_devices; i++)
        ok = append(out, size, &length, "%s%.*s", i == 0 ? " device=" : ",", IFNAMSIZ,
                    rule->devices[i]);
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

    /* A policy parses only when it ends with a newline (or is empty); one more blank line
       changes nothing. */
    CHECK(size == 0 || data[size - 1] == '\n', "a policy whose last line has no newline parses");
    memcpy(copy, data, size);
    copy[size] = '\n';
    CHECK(parse_policy(copy, size + 1, &newline, why), "fails with a newline appended: %s", why);
    CHECK(same_policy(&policy, &newline, true), "another policy with a newline appended");

    fuzz_check_round_trip(&policy);
    return 0;
}
