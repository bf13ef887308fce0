/*
 * libFuzzer harness for the whole decision the helper makes before it opens anything: a policy
 * file and a request, both fuzzed, the way main() uses them (parse_request, then parse_policy, then
 * policy_decision for every socket).
 *
 * Input: the policy text, a NUL byte (a policy never holds one), then the request's arguments after
 * argv[0] separated by NUL bytes, e.g. "allow port=80\0v1\0kind=tcp,family=inet,addr=::1,port=80".
 * Every decision must agree with an independent bit-by-bit reference for a few fixed callers, an
 * empty policy must allow nothing, and each socket's grant filter must be well formed.
 */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct request request;
    static struct policy policy, builtin;
    struct fuzz_argv args;
    unsigned bad;
    reason why;

    fuzz_make_fixed();
    const uint8_t *nul = memchr(data, '\0', size);
    size_t policy_size = nul != NULL ? (size_t)(nul - data) : size;
    if (policy_size > MAX_POLICY_BYTES || nul == NULL)
        return -1;
    const uint8_t *rest = nul + 1;
    fuzz_argv_make(&args, rest, size - policy_size - 1);
    if (parse_request(args.argc, args.argv, &request, &bad, why)) {
        CHECK(request.count >= 1 && request.count <= MAX_SOCKETS, "%u sockets", request.count);
        /* A copy of exactly the policy's bytes, so that ASan sees a read past its end. */
        char *text = malloc(policy_size + 1);
        CHECK(text != NULL, "out of memory");
        memcpy(text, data, policy_size);
        if (parse_policy(text, policy_size, &policy, why)) {
            fuzz_check_policy(&policy, fuzz_count_lines(data, policy_size));
            for (unsigned i = 0; i < request.count; i++) {
                fuzz_check_socket(&request.sockets[i]);
                for (size_t c = 0; c < COUNT(fixed_callers); c++)
                    fuzz_check_decision(&policy, &fixed_callers[c], &request.sockets[i]);
            }
        } else {
            fuzz_check_reason(why);
        }
        free(text);
        /* No policy file allows nothing, and an empty one too: no rule, no socket. */
        memset(&builtin, 0, sizeof builtin);
        for (unsigned i = 0; i < request.count; i++) {
            struct decision none = policy_decision(&builtin, &fixed_callers[0],
                                                   &request.sockets[i]);
            CHECK(!none.allowed && none.rule == NULL, "an empty policy allows socket %u", i + 1);
            fuzz_check_grant_filters(&request.sockets[i]);
        }
    } else {
        fuzz_check_reason(why);
    }
    fuzz_argv_free(&args);
    return 0;
}
