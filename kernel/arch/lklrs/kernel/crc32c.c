// SPDX-License-Identifier: GPL-2.0
/*
 * CRC32C with the host CPU's crc32 instruction.
 *
 * ext4 and jbd2 checksum every metadata block they touch with CRC32C
 * (metadata_csum, journal checksum v3), XFS and btrfs likewise. The generic
 * lib/crc32.c is a table-driven loop; x86-64 CPUs have had a crc32
 * instruction (SSE4.2) since 2008 that takes eight bytes per step. Like
 * arm64 and riscv, override the weak __crc32c_le(), which the crypto
 * "crc32c" hash and libcrc32c both call, and fall back to the generic code
 * when the host CPU lacks the instruction.
 */
#include <linux/cache.h>
#include <linux/crc32.h>
#include <linux/init.h>
#include <linux/printk.h>
#include <linux/unaligned.h>

#if defined(__x86_64__)

static bool crc32c_use_insn __read_mostly;

__attribute__((target("sse4.2")))
static u32 crc32c_insn(u32 crc, const u8 *p, size_t len)
{
	u64 crc64 = crc;

	/* Unaligned 8-byte loads cost nothing extra on x86-64. */
	for (; len >= 8; len -= 8, p += 8)
		crc64 = __builtin_ia32_crc32di(crc64,
					       get_unaligned((const u64 *)p));
	for (; len; len--, p++)
		crc64 = __builtin_ia32_crc32qi((u32)crc64, *p);
	return (u32)crc64;
}

u32 __pure __crc32c_le(u32 crc, unsigned char const *p, size_t len)
{
	if (crc32c_use_insn)
		return crc32c_insn(crc, p, len);
	return __crc32c_le_base(crc, p, len);
}

static bool __init crc32c_cpu_has_insn(void)
{
	unsigned int eax = 1, ebx, ecx = 0, edx;

	asm volatile("cpuid" : "+a"(eax), "=b"(ebx), "+c"(ecx), "=d"(edx));
	return ecx & (1U << 20);	/* CPUID.1:ECX.SSE4_2 */
}

/*
 * The crypto manager's self-tests are not built: check the instruction
 * against the generic code, from unaligned starts and with tails too.
 */
static bool __init crc32c_insn_agrees(void)
{
	static const u8 check[] = "123456789";
	u8 buf[67];
	unsigned int i, off;

	if (~crc32c_insn(~0, check, 9) != 0xe3069283)
		return false;
	for (i = 0; i < sizeof(buf); i++)
		buf[i] = i * 37 + 11;
	for (off = 0; off < 8; off++) {
		size_t len = sizeof(buf) - off;

		if (crc32c_insn(0x1234, buf + off, len) !=
		    __crc32c_le_base(0x1234, buf + off, len))
			return false;
	}
	return true;
}

/* Before any filesystem is mounted. */
static int __init crc32c_choose(void)
{
	if (!crc32c_cpu_has_insn())
		return 0;
	if (!crc32c_insn_agrees()) {
		pr_warn("lklrs: the crc32 instruction disagrees with the generic CRC32C; not used\n");
		return 0;
	}
	crc32c_use_insn = true;
	return 0;
}
early_initcall(crc32c_choose);

#endif /* __x86_64__ */
