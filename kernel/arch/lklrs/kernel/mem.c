// SPDX-License-Identifier: GPL-2.0
/*
 * Kernel RAM is one allocation from the host, used 1:1: the host address
 * of a byte is also its kernel virtual and "physical" address.
 */
#include <linux/memblock.h>
#include <linux/mm.h>
#include <linux/pfn.h>
#include <asm/host.h>

#include "lkl.h"

unsigned long memory_start, memory_end;
void *empty_zero_page;

void __init lkl_bootmem_init(unsigned long mem_size)
{
	unsigned long max_zone_pfn[MAX_NR_ZONES] = { 0 };
	void *ram;

	mem_size = PAGE_ALIGN(mem_size);
	ram = lkl_ops.mem_alloc(mem_size);
	if (!ram)
		panic("lkl: cannot allocate %lu bytes of RAM from the host\n",
		      mem_size);

	memory_start = (unsigned long)ram;
	memory_end = memory_start + mem_size;
	min_low_pfn = PFN_UP(memory_start);
	max_low_pfn = PFN_DOWN(memory_end);
	max_pfn = max_low_pfn;

	memblock_add(memory_start, mem_size);

	empty_zero_page = memblock_alloc(PAGE_SIZE, PAGE_SIZE);
	if (!empty_zero_page)
		panic("lkl: cannot allocate the zero page\n");

	max_zone_pfn[ZONE_NORMAL] = max_low_pfn;
	free_area_init(max_zone_pfn);
}

void __init mem_init(void)
{
	max_mapnr = max_low_pfn - min_low_pfn;
	memblock_free_all();
}

/* Init code and data live in the host executable, not in kernel RAM. */
void free_initmem(void)
{
}
