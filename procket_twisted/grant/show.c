/*
 * One eBPF instruction as a line of text, for `procket-grant compile`: its index, its fields as
 * the kernel reads them (code, dst, src, off, imm), and what it does, in the notation of the
 * kernel's verifier log ("w" a register's low 32 bits, "r" all 64). Only the instructions
 * compile.c emits are named; any other shows its fields only. Pure: it writes into OUT.
 */
#include "grant.h"

#include <stdio.h>

static const char *const alu_names[16] = {
    [BPF_ADD >> 4] = "+=", [BPF_SUB >> 4] = "-=", [BPF_OR >> 4] = "|=", [BPF_AND >> 4] = "&=",
    [BPF_RSH >> 4] = ">>=", [BPF_XOR >> 4] = "^=", [BPF_MOV >> 4] = "=",
};
static const char *const jump_names[16] = {
    [BPF_JEQ >> 4] = "==", [BPF_JNE >> 4] = "!=", [BPF_JGT >> 4] = ">", [BPF_JGE >> 4] = ">=",
    [BPF_JLT >> 4] = "<", [BPF_JLE >> 4] = "<=",
};

static const char *size_name(uint8_t code)
{
    switch (BPF_SIZE(code)) {
    case BPF_B: return "u8";
    case BPF_H: return "u16";
    case BPF_W: return "u32";
    default: return "u64";
    }
}

/* Small numbers in decimal, masks and addresses in hex. */
static void number(int32_t imm, char *out, size_t size)
{
    if (imm > -65536 && imm < 65536)
        (void)snprintf(out, size, "%d", imm);
    else
        (void)snprintf(out, size, "0x%08x", (unsigned)imm);
}

void format_insn(const struct bpf_insn *insn, unsigned index, char *out, size_t size)
{
    char what[96] = "", imm[16];
    uint8_t code = insn->code, op = BPF_OP(code);
    unsigned dst = insn->dst_reg, src = insn->src_reg;
    number(insn->imm, imm, sizeof imm);
    switch (BPF_CLASS(code)) {
    case BPF_ALU:
    case BPF_ALU64: {
        char w = BPF_CLASS(code) == BPF_ALU64 ? 'r' : 'w';
        if (op == BPF_END)
            (void)snprintf(what, sizeof what, "%c%u = be%d %c%u", w, dst, insn->imm, w, dst);
        else if (alu_names[op >> 4] != NULL && BPF_SRC(code) == BPF_X)
            (void)snprintf(what, sizeof what, "%c%u %s %c%u", w, dst, alu_names[op >> 4], w, src);
        else if (alu_names[op >> 4] != NULL)
            (void)snprintf(what, sizeof what, "%c%u %s %s", w, dst, alu_names[op >> 4], imm);
        break;
    }
    case BPF_LDX:
        (void)snprintf(what, sizeof what, "%c%u = *(%s *)(r%u %+d)",
                       BPF_SIZE(code) == BPF_DW ? 'r' : 'w', dst, size_name(code), src, insn->off);
        break;
    case BPF_STX:
        (void)snprintf(what, sizeof what, "*(%s *)(r%u %+d) = w%u", size_name(code), dst,
                       insn->off, src);
        break;
    case BPF_ST:
        (void)snprintf(what, sizeof what, "*(%s *)(r%u %+d) = %s", size_name(code), dst,
                       insn->off, imm);
        break;
    case BPF_JMP:
    case BPF_JMP32: {
        char w = BPF_CLASS(code) == BPF_JMP ? 'r' : 'w';
        if (code == (BPF_JMP | BPF_JA))
            (void)snprintf(what, sizeof what, "goto %+d", insn->off);
        else if (code == (BPF_JMP | BPF_EXIT))
            (void)snprintf(what, sizeof what, "exit");
        else if (code == (BPF_JMP | BPF_CALL))
            (void)snprintf(what, sizeof what, "call %d%s", insn->imm,
                           insn->imm == BPF_FUNC_get_current_uid_gid ? " (get_current_uid_gid)"
                                                                      : "");
        else if (jump_names[op >> 4] != NULL && BPF_SRC(code) == BPF_K)
            (void)snprintf(what, sizeof what, "if %c%u %s %s goto %+d", w, dst,
                           jump_names[op >> 4], imm, insn->off);
        break;
    }
    default:
        break;
    }
    (void)snprintf(out, size, "%6u  %02x %x %x %6d %11d  %s", index, code, dst, src, insn->off,
                   insn->imm, what);
}
