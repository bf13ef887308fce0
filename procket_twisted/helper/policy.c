/*
 * The policy: its text (lines of "allow|deny key=value[,value...]..."; '#' starts a comment) and
 * its decisions. The first matching rule decides; no match denies; a request for several sockets
 * needs every one allowed (main.c).
 *
 * A socket is matched as every address it will accept (socket_views): a tcp or udp socket on
 * "::ffff:a.b.c.d" is an IPv4 socket on a.b.c.d; one on "::" without v6only accepts IPv4 too, so
 * it is matched as "::" and as "0.0.0.0", and is allowed only if both are; a wildcard accepts
 * every address of its family (a /0 network); a tun or tap interface accepts its whole network
 * (address/prefixlen). An allow rule's addr= must contain that network; a deny rule's addr=
 * matches when it overlaps it. No I/O and no privilege here.
 */
#include "helper.h"

#include <string.h>

/* The keys of a rule, in the order of the message that lists them. */
enum rule_key {
    RULE_USER, RULE_GROUP, RULE_KIND, RULE_FAMILY, RULE_PORT, RULE_ADDR, RULE_OPTIONS,
    RULE_DEVICE, RULE_PROTO, RULE_ETHERTYPE, RULE_KEY_COUNT
};
static const char *const rule_key_names[RULE_KEY_COUNT] = {
    "user", "group", "kind", "family", "port", "addr", "options", "device", "proto", "ethertype",
};

/* What options= once granted and the kernel cannot keep: the holder can do it itself. */
static const struct { const char *name, *why; } no_longer_options[] = {
    {"hdrincl", "the holder of any raw IPv4 socket can set IP_HDRINCL itself, so every raw grant "
                "includes it"},
    {"promisc", "the holder of any packet socket can turn promiscuous mode on itself, so every "
                "packet grant includes it"},
};

static bool parse_options_value(const char *value, struct rule *rule, reason why)
{
    unsigned index;
    for (size_t i = 0; i < COUNT(no_longer_options); i++)
        if (strcmp(value, no_longer_options[i].name) == 0) {
            say(why, "options=%s grants nothing: %s (SECURITY.md)", value,
                no_longer_options[i].why);
            return false;
        }
    if (!parse_option_name(value, &index)) {
        say(why, "unknown option '%.32s'", value);
        return false;
    }
    rule->options |= OPTION(index);
    return true;
}

/* A list of ranges up to MAX into RANGES (COUNT of them). */
static bool parse_ranges(char *list, uint32_t max, bool hex, struct range *ranges,
                         unsigned *count, const char *key, reason why)
{
    for (char *value = strsep(&list, ","); value != NULL; value = strsep(&list, ",")) {
        if (*count == MAX_VALUES) {
            say(why, "more than %d values for '%s'", MAX_VALUES, key);
            return false;
        }
        if (!parse_range(value, max, hex, &ranges[(*count)++])) {
            say(why, "bad value '%.48s' for '%s'", value, key);
            return false;
        }
    }
    return true;
}

/* One "key=v1,v2" condition of a rule. */
static bool parse_condition(char *item, struct rule *rule, reason why)
{
    char *key, *list;
    unsigned which = 0, bounded;
    if (!split_pair(item, &key, &list)) {
        say(why, "'%.32s' is not key=value", item);
        return false;
    }
    while (which < RULE_KEY_COUNT && strcmp(key, rule_key_names[which]) != 0)
        which++;
    if (which == RULE_KEY_COUNT) {
        if (parse_option_name(key, &bounded) && options[bounded].bounded) {
            if (rule->n_bounds[bounded] != 0) {
                say(why, "key '%s' given twice", key);
                return false;
            }
            return parse_ranges(list, options[bounded].max, false, rule->bounds[bounded],
                                &rule->n_bounds[bounded], key, why);
        }
        say(why, "unknown key '%.32s' (known: user group kind family port addr options device "
            "proto ethertype, and mark priority rcvbuf sndbuf to bound those options' values)",
            key);
        return false;
    }
    unsigned *counts[RULE_KEY_COUNT] = {
        [RULE_USER] = &rule->n_users, [RULE_GROUP] = &rule->n_groups,
        [RULE_PORT] = &rule->n_ports, [RULE_ADDR] = &rule->n_addresses,
        [RULE_DEVICE] = &rule->n_devices, [RULE_PROTO] = &rule->n_protos,
        [RULE_ETHERTYPE] = &rule->n_ethertypes,
    };
    unsigned *bits[RULE_KEY_COUNT] = {
        [RULE_KIND] = &rule->kinds, [RULE_FAMILY] = &rule->families,
        [RULE_OPTIONS] = &rule->options,
    };
    if ((counts[which] != NULL && *counts[which] != 0) || (bits[which] != NULL && *bits[which] != 0)) {
        say(why, "key '%s' given twice", key);
        return false;
    }
    switch (which) {
    case RULE_PORT: return parse_ranges(list, 65535, false, rule->ports, &rule->n_ports, key, why);
    case RULE_PROTO: return parse_ranges(list, 255, false, rule->protos, &rule->n_protos, key, why);
    case RULE_ETHERTYPE:
        return parse_ranges(list, 65535, true, rule->ethertypes, &rule->n_ethertypes, key, why);
    default: break;
    }
    rule->has_options = rule->has_options || which == RULE_OPTIONS;
    for (char *value = strsep(&list, ","); value != NULL; value = strsep(&list, ",")) {
        bool ok;
        unsigned bit = 0;
        if (counts[which] != NULL && *counts[which] == MAX_VALUES) {
            say(why, "more than %d values for '%s'", MAX_VALUES, key);
            return false;
        }
        switch (which) {
        case RULE_USER: ok = parse_number(value, UINT32_MAX - 1, &rule->users[rule->n_users++]); break;
        case RULE_GROUP: ok = parse_number(value, UINT32_MAX - 1, &rule->groups[rule->n_groups++]); break;
        case RULE_KIND: ok = parse_kind(value, &bit); rule->kinds |= bit; break;
        case RULE_FAMILY:
            ok = parse_name(value, family_names, COUNT(family_names), &bit);
            rule->families |= bit;
            break;
        case RULE_ADDR:
            ok = parse_prefix(value, &rule->addresses[rule->n_addresses++]);
            if (!ok) {
                say(why, "bad value '%.48s' for 'addr' (a numeric address, or a network such as "
                    "10.0.0.0/8 or fd00::/8)", value);
                return false;
            }
            break;
        case RULE_OPTIONS:
            if (!parse_options_value(value, rule, why))
                return false;
            ok = true;
            break;
        default: ok = parse_device(value, rule->devices[rule->n_devices++]); break;
        }
        if (!ok) {
            say(why, "bad value '%.48s' for '%s'", value, key);
            return false;
        }
    }
    return true;
}

/* What a whole rule must say, once its conditions are read. */
static bool check_rule(const struct rule *rule, reason why)
{
    if (rule->allow && (rule->kinds & KIND_DEVICE) && rule->n_devices == 0) {
        say(why, "an allow rule for tun or tap must name its interfaces with device= (their "
            "holder can make them outlive it: the names bound what it can leave behind)");
        return false;
    }
    for (unsigned i = 0; i < OPTION_COUNT; i++)
        if (rule->allow && rule->n_bounds[i] != 0 && !(rule->options & OPTION(i))) {
            say(why, "%s= bounds an option this rule does not grant: add options=%s",
                options[i].name, options[i].name);
            return false;
        }
    return true;
}

bool parse_policy(const char *text, size_t length, struct policy *out, reason why)
{
    out->count = 0;       /* each rule is cleared as it starts: the whole table is large */
    if (memchr(text, '\0', length) != NULL) {
        say(why, "the file contains a NUL byte");
        return false;
    }
    if (length > 0 && text[length - 1] != '\n') {
        say(why, "its last line has no newline: a half-written file?");
        return false;
    }
    unsigned line_number = 0;
    size_t start = 0;
    while (start < length) {
        const char *end = memchr(text + start, '\n', length - start);
        size_t line_length = end != NULL ? (size_t)(end - (text + start)) : length - start;
        char line[MAX_POLICY_LINE + 1];
        line_number++;
        if (line_length > MAX_POLICY_LINE) {
            say(why, "line %u: longer than %d bytes", line_number, MAX_POLICY_LINE);
            return false;
        }
        memcpy(line, text + start, line_length);
        line[line_length] = '\0';
        start += line_length + 1;
        struct rule *rule = NULL;
        char *cursor = line;
        reason detail;
        for (char *word = strsep(&cursor, " \t\r"); word != NULL; word = strsep(&cursor, " \t\r")) {
            if (word[0] == '\0')
                continue;
            if (word[0] == '#')
                break;
            if (rule == NULL) {
                if (out->count == MAX_RULES) {
                    say(why, "line %u: more than %d rules", line_number, MAX_RULES);
                    return false;
                }
                rule = &out->rules[out->count++];
                memset(rule, 0, sizeof *rule);
                rule->line = line_number;
                rule->allow = strcmp(word, "allow") == 0;
                if (!rule->allow && strcmp(word, "deny") != 0) {
                    say(why, "line %u: a rule starts with allow or deny, not '%.32s'",
                        line_number, word);
                    return false;
                }
            } else if (!parse_condition(word, rule, detail)) {
                say(why, "line %u: %s", line_number, detail);
                return false;
            }
        }
        if (rule != NULL && !check_rule(rule, detail)) {
            say(why, "line %u: %s", line_number, detail);
            return false;
        }
    }
    return true;
}

/* ---- matching ------------------------------------------------------------------------------- */

static bool same_leading_bits(const struct address *a, const struct address *b, unsigned bits)
{
    unsigned whole = bits / 8, rest = bits % 8;
    if (memcmp(a->bytes, b->bytes, whole) != 0)
        return false;
    unsigned mask = (0xffu << (8 - rest)) & 0xffu;
    return rest == 0 || (a->bytes[whole] & mask) == (b->bytes[whole] & mask);
}

/* Every address of INNER is in OUTER. */
bool prefix_contains(const struct prefix *outer, const struct prefix *inner)
{
    return outer->address.family == inner->address.family && outer->bits <= inner->bits &&
           same_leading_bits(&outer->address, &inner->address, outer->bits);
}

/* Some address is in both. */
bool prefixes_overlap(const struct prefix *a, const struct prefix *b)
{
    return a->address.family == b->address.family &&
           same_leading_bits(&a->address, &b->address, a->bits < b->bits ? a->bits : b->bits);
}

static bool is_zero_address(const struct address *address)
{
    static const unsigned char zero[16];
    return memcmp(address->bytes, zero, sizeof zero) == 0;
}

/* The address with its bits after BITS cleared: an interface's network. */
static void clear_host_bits(struct address *address, unsigned bits)
{
    for (unsigned bit = bits; bit < 128; bit++)
        address->bytes[bit / 8] &= (unsigned char)~(0x80u >> (bit % 8));
}

unsigned socket_views(const struct socket_request *socket, struct view views[MAX_VIEWS])
{
    memset(views, 0, sizeof(struct view) * MAX_VIEWS);
    struct view *view = &views[0];
    view->family = socket->address.family;
    if (!socket->has_address && !(socket->kind & (KIND_INET | KIND_RAW)))
        return 1;                       /* a packet socket; an interface given no address */
    view->addressed = true;
    view->network.address = socket->address;
    if (socket->kind & KIND_DEVICE) {
        view->network.bits = socket->prefixlen;
        clear_host_bits(&view->network.address, socket->prefixlen);
        return 1;
    }
    if ((socket->kind & KIND_INET) && is_v4_mapped(&view->network.address)) {
        unmap_v4(&view->network.address);
        view->family = FAMILY_INET;
    }
    bool wildcard = is_zero_address(&view->network.address);
    view->network.bits = wildcard ? 0 : view->family == FAMILY_INET ? 32 : 128;
    bool v6only = (socket->options & OPTION(OPT_V6ONLY)) && socket->values[OPT_V6ONLY] == 1;
    if (!(wildcard && (socket->kind & KIND_INET) && view->family == FAMILY_INET6 && !v6only))
        return 1;
    views[1].family = FAMILY_INET;      /* "::" without v6only: every IPv4 address too */
    views[1].addressed = true;
    views[1].network.address.family = FAMILY_INET;
    return 2;
}

static bool listed(const uint32_t *ids, unsigned count, uint32_t id)
{
    for (unsigned i = 0; i < count; i++)
        if (ids[i] == id)
            return true;
    return count == 0;
}

/* Under sudo the supplementary groups are unknown: a deny rule naming groups matches anyway. */
static bool group_matches(const struct rule *rule, const struct caller *caller)
{
    if (rule->n_groups == 0 || (!rule->allow && !caller->groups_known))
        return true;
    for (unsigned i = 0; i < rule->n_groups; i++) {
        if (rule->groups[i] == caller->gid)
            return true;
        for (int g = 0; caller->groups_known && g < caller->n_groups; g++)
            if (rule->groups[i] == caller->groups[g])
                return true;
    }
    return false;
}

/* No ranges: any value. Ranges: only a kind that HAS the value, and it is in one of them. */
static bool in_ranges(const struct range *ranges, unsigned count, bool has, uint32_t value)
{
    if (count == 0)
        return true;
    for (unsigned i = 0; has && i < count; i++)
        if (value >= ranges[i].low && value <= ranges[i].high)
            return true;
    return false;
}

static bool address_matches(const struct rule *rule, const struct view *view)
{
    if (rule->n_addresses == 0)
        return true;
    for (unsigned i = 0; view->addressed && i < rule->n_addresses; i++)
        if (rule->allow ? prefix_contains(&rule->addresses[i], &view->network)
                        : prefixes_overlap(&rule->addresses[i], &view->network))
            return true;
    return false;
}

static bool device_matches(const struct rule *rule, const struct socket_request *socket)
{
    for (unsigned i = 0; i < rule->n_devices; i++)
        if ((socket->options & OPTION(OPT_DEVICE)) && strcmp(socket->device, rule->devices[i]) == 0)
            return true;
    return rule->n_devices == 0;
}

/* An allow rule's bound limits an option's value when it is asked for; a deny rule's bound
   matches only a socket that asks for the option with a value in it. */
static bool bounds_match(const struct rule *rule, const struct socket_request *socket)
{
    for (unsigned i = 0; i < OPTION_COUNT; i++) {
        if (rule->n_bounds[i] == 0)
            continue;
        bool asked = (socket->options & OPTION(i)) != 0;
        if (!asked && !rule->allow)
            return false;
        if (asked && !in_ranges(rule->bounds[i], rule->n_bounds[i], true, socket->values[i]))
            return false;
    }
    return true;
}

static bool options_match(const struct rule *rule, const struct socket_request *socket)
{
    /* A packet socket's interface and a new tun or tap's name are what is asked for (device=
       decides them), not the SO_BINDTODEVICE option an allow rule must grant. */
    unsigned intrinsic = socket->kind & (KIND_PACKET | KIND_DEVICE) ? OPTION(OPT_DEVICE) : 0u;
    unsigned asked = socket->options & ~intrinsic;
    if (rule->allow)      /* it grants its options=, or those any process may set itself */
        return (asked & ~(rule->has_options ? rule->options : unprivileged_options())) == 0;
    return !rule->has_options || (asked & rule->options) != 0;
}

bool rule_matches(const struct rule *rule, const struct caller *caller,
                  const struct socket_request *socket, const struct view *view)
{
    /* A rule that names no kind is about TCP and UDP only: raw, packet, tun and tap sockets
       must always be named, so that no older or broader rule grants them by accident. */
    if (!((rule->kinds != 0 ? rule->kinds : (unsigned)KIND_INET) & socket->kind))
        return false;
    if (rule->families != 0 && !(rule->families & view->family))
        return false;
    return listed(rule->users, rule->n_users, caller->uid) && group_matches(rule, caller) &&
           in_ranges(rule->ports, rule->n_ports, socket->kind & KIND_INET, socket->port) &&
           in_ranges(rule->protos, rule->n_protos, socket->kind == KIND_RAW, socket->proto) &&
           in_ranges(rule->ethertypes, rule->n_ethertypes, socket->kind == KIND_PACKET,
                     socket->ethertype) &&
           address_matches(rule, view) && device_matches(rule, socket) &&
           bounds_match(rule, socket) && options_match(rule, socket);
}

/*
 * Each network the socket accepts is decided by the first rule that matches it; the socket is
 * allowed only when every one is. Denied: the first deny (or NULL, no rule matched); allowed:
 * the rule that allowed its first network.
 */
struct decision policy_decision(const struct policy *policy, const struct caller *caller,
                                const struct socket_request *socket)
{
    struct view views[MAX_VIEWS];
    unsigned count = socket_views(socket, views);
    struct decision result = {false, NULL};
    for (unsigned v = 0; v < count; v++) {
        const struct rule *rule = NULL;
        for (unsigned i = 0; i < policy->count && rule == NULL; i++)
            if (rule_matches(&policy->rules[i], caller, socket, &views[v]))
                rule = &policy->rules[i];
        if (rule == NULL || !rule->allow)
            return (struct decision){false, rule};
        if (v == 0)
            result = (struct decision){true, rule};
    }
    return result;
}
