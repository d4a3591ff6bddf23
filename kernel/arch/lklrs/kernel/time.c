// SPDX-License-Identifier: GPL-2.0
/*
 * Time from the host: a clocksource reading the host's monotonic clock,
 * a one-shot clockevent backed by a host timer whose expiry raises
 * LKL_TIMER_IRQ, and the wall clock read from the host at boot (and again
 * once the host clock drives timekeeping).
 */
#include <linux/clockchips.h>
#include <linux/clocksource.h>
#include <linux/delay.h>
#include <linux/interrupt.h>
#include <linux/irq.h>
#include <linux/sched/clock.h>
#include <linux/time64.h>
#include <linux/timekeeping.h>
#include <asm/host.h>

#include "lkl.h"

static struct lkl_timer *host_timer;
static u64 boot_ns;

unsigned long long sched_clock(void)
{
	return lkl_ops.monotonic_ns() - boot_ns;
}

void read_persistent_clock64(struct timespec64 *ts)
{
	*ts = ns_to_timespec64(lkl_ops.realtime_ns());
}

/* Delays spin on the host clock; there is no loop to calibrate. */
void __ndelay(unsigned long nsecs)
{
	u64 end = lkl_ops.monotonic_ns() + nsecs;

	while (lkl_ops.monotonic_ns() < end)
		cpu_relax();
}

void __udelay(unsigned long usecs)
{
	__ndelay(usecs * NSEC_PER_USEC);
}

void __delay(unsigned long loops)
{
	__ndelay(loops);
}

void calibrate_delay(void)
{
	/* __delay() takes nanoseconds: one "loop" per nanosecond. */
	loops_per_jiffy = NSEC_PER_SEC / HZ;
}

static u64 lkl_clock_read(struct clocksource *cs)
{
	return lkl_ops.monotonic_ns();
}

static struct clocksource lkl_clocksource = {
	.name	= "lkl",
	.rating	= 499,
	.read	= lkl_clock_read,
	.flags	= CLOCK_SOURCE_IS_CONTINUOUS,
	.mask	= CLOCKSOURCE_MASK(64),
};

static int lkl_timer_next_event(unsigned long delta_ns,
				struct clock_event_device *evt)
{
	lkl_ops.timer_set_oneshot(host_timer, delta_ns);
	return 0;
}

static int lkl_timer_shutdown(struct clock_event_device *evt)
{
	lkl_ops.timer_cancel(host_timer);
	return 0;
}

static int lkl_timer_oneshot(struct clock_event_device *evt)
{
	return 0;
}

static struct clock_event_device lkl_clockevent = {
	.name			= "lkl",
	.features		= CLOCK_EVT_FEAT_ONESHOT,
	.set_next_event		= lkl_timer_next_event,
	.set_state_shutdown	= lkl_timer_shutdown,
	.set_state_oneshot	= lkl_timer_oneshot,
	.rating			= 400,
	.irq			= LKL_TIMER_IRQ,
};

static irqreturn_t lkl_timer_interrupt(int irq, void *dev_id)
{
	struct clock_event_device *evt = dev_id;

	evt->event_handler(evt);
	return IRQ_HANDLED;
}

/* Runs on the host's timer thread. */
static void lkl_timer_expired(void *arg)
{
	lkl_trigger_irq(LKL_TIMER_IRQ);
}

void __init time_init(void)
{
	int ret;

	boot_ns = lkl_ops.monotonic_ns();

	host_timer = lkl_ops.timer_alloc(lkl_timer_expired, NULL);
	if (!host_timer)
		panic("lkl: cannot allocate the host timer\n");

	ret = clocksource_register_hz(&lkl_clocksource, NSEC_PER_SEC);
	if (ret)
		panic("lkl: cannot register the clocksource: %d\n", ret);

	ret = request_irq(LKL_TIMER_IRQ, lkl_timer_interrupt,
			  IRQF_TIMER | IRQF_NOBALANCING, "timer",
			  &lkl_clockevent);
	if (ret)
		panic("lkl: cannot request the timer irq: %d\n", ret);

	lkl_clockevent.cpumask = cpumask_of(0);
	clockevents_config_and_register(&lkl_clockevent, NSEC_PER_SEC, 1,
					ULONG_MAX);
}

/*
 * Until the clocksource above is selected (clocksource_done_booting(), an
 * fs_initcall), timekeeping runs on jiffies: the wall clock read at boot
 * then advances in whole ticks, and only as ticks get delivered, so it ends
 * up to a tick or more off the host's. Once the host clock drives
 * timekeeping, read the wall clock from the host again.
 */
static int __init lkl_sync_wall_clock(void)
{
	struct timespec64 now = ns_to_timespec64(lkl_ops.realtime_ns());

	return do_settimeofday64(&now);
}
late_initcall(lkl_sync_wall_clock);

/* After halt the timer must not raise interrupts any more. */
void lkl_time_shutdown(void)
{
	if (host_timer)
		lkl_ops.timer_cancel(host_timer);
}
