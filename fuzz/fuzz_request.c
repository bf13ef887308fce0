/*
 * libFuzzer harness for the helper's request parser, parse_request(argc, argv, ...).
 *
 * Input: the helper's arguments after argv[0], separated by NUL bytes, e.g.
 * "v1\0kind=tcp,family=inet,addr=0.0.0.0,port=80" or "v1\0check\0SPEC..." (at most
 * FUZZ_MAX_ARGS of them).
 * A parsed request must satisfy the invariants (1..253 sockets, known kinds and families, ports and
 * backlogs <= 65535, v6only only for inet6, backlog only for tcp), its grant filter must be well
 * formed, each socket must survive a
 * round trip through its canonical spec, and matching it against a fixed policy for a few callers
 * must agree with an independent bit-by-bit reference.
 */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct request request;
    struct fuzz_argv args;
    unsigned bad = 12345;
    reason why;

    fuzz_make_fixed();
    fuzz_argv_make(&args, data, size);
    memset(why, 'x', sizeof why);     /* a failure must leave a terminated reason */
    bool ok = parse_request(args.argc, args.argv, &request, &bad, why);
    bool check = args.argc >= 3 && strcmp(args.argv[2], "check") == 0;
    int first = check ? 3 : 2;        /* the first spec */
    unsigned specs = args.argc > first ? (unsigned)(args.argc - first) : 0;
    if (!ok) {
        fuzz_check_reason(why);
        CHECK(bad <= specs, "bad spec %u of %u", bad, specs);
        if (bad > 0) {
            /* The specs before the bad one parse alone; the bad one fails alone too. */
            struct socket_request alone;
            reason ignored;
            for (unsigned i = 1; i < bad; i++)
                CHECK(parse_spec(args.argv[first + (int)i - 1], &alone, ignored),
                      "spec %u parses alone", i);
            CHECK(!parse_spec(args.argv[first + (int)bad - 1], &alone, ignored),
                  "bad spec %u parses alone", bad);
        }
    } else {
        CHECK(bad == 0, "success with bad %u", bad);
        CHECK(strcmp(args.argv[1], PROTOCOL_VERSION) == 0, "version '%s' accepted", args.argv[1]);
        CHECK(request.check == check, "check %d for argv[2] '%s'", request.check, args.argv[2]);
        CHECK(request.count == specs && request.count >= 1 && request.count <= MAX_SOCKETS,
              "%u sockets for %u specs", request.count, specs);
        for (unsigned i = 0; i < request.count; i++) {
            const struct socket_request *socket = &request.sockets[i];
            fuzz_check_socket(socket);
            fuzz_check_spec_round_trip(socket);
            fuzz_check_grant_filters(socket);
            for (size_t c = 0; c < COUNT(fixed_callers); c++)
                fuzz_check_decision(&fixed_policy, &fixed_callers[c], socket);
        }
    }
    fuzz_argv_free(&args);
    return 0;
}
