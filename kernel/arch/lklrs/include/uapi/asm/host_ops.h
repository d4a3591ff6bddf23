/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * The one contract between the library kernel and the host program.
 *
 * The host fills a struct lkl_host_ops and passes it to lkl_start_kernel().
 * Every member is mandatory. The kernel calls these from whatever host thread
 * currently runs kernel code; none of them may call back into the kernel
 * except where stated.
 */
#ifndef _UAPI_ASM_LKLRS_HOST_OPS_H
#define _UAPI_ASM_LKLRS_HOST_OPS_H

/* Opaque host objects; the kernel only passes the pointers back. */
struct lkl_sem;
struct lkl_mutex;
struct lkl_tls_key;
struct lkl_timer;

/* A host thread handle; 0 means "no thread". */
typedef unsigned long lkl_thread_t;

/* Interrupt lines: the kernel owns LKL_TIMER_IRQ, hosts may use the rest. */
#define LKL_NR_IRQS		64
#define LKL_TIMER_IRQ		1
#define LKL_FIRST_DEVICE_IRQ	2

/**
 * struct lkl_host_ops - services the host provides to the kernel
 *
 * @print: write console output (not NUL terminated, may hold several lines)
 * @panic: the kernel cannot continue; must not return
 * @sem_alloc: counting semaphore with an initial count; up and down may come
 *	from different threads
 * @sem_free: release a semaphore nobody waits on
 * @sem_up: increment, waking one waiter
 * @sem_down: wait until the count is positive, then decrement
 * @mutex_alloc: non-recursive mutex
 * @mutex_free: release an unlocked mutex
 * @mutex_lock: lock
 * @mutex_unlock: unlock (always from the locking thread)
 * @thread_create: start a host thread running fn(arg); returns 0 on failure.
 *	The value returned must equal what thread_self() returns inside the
 *	new thread. The thread ends when fn returns.
 * @thread_join: wait for a thread created by thread_create to end
 * @thread_self: handle of the calling thread (any thread, not only ours)
 * @tls_alloc: thread-specific slot whose destructor runs when a thread that
 *	set a non-NULL value exits; the destructor may call into the kernel
 * @tls_set: set the calling thread's value
 * @tls_get: get the calling thread's value (NULL if never set)
 * @mem_alloc: page-aligned, zero-filled memory for kernel RAM
 * @mem_free: return memory from mem_alloc
 * @monotonic_ns: monotonic clock in nanoseconds
 * @realtime_ns: wall clock in nanoseconds since the epoch
 * @timer_alloc: one-shot timer calling fn(arg) from a host thread
 * @timer_set_oneshot: (re)arm to fire once after delta_ns
 * @timer_cancel: disarm
 * @timer_free: release a disarmed timer
 * @iomem_access: access emulated device memory at a "physical" address
 *	announced on the command line; returns 0 or a negative errno
 * @memcpy: host memcpy
 * @memset: host memset
 * @memmove: host memmove
 */
struct lkl_host_ops {
	void (*print)(const char *str, int len);
	void (*panic)(const char *msg);

	struct lkl_sem *(*sem_alloc)(int count);
	void (*sem_free)(struct lkl_sem *sem);
	void (*sem_up)(struct lkl_sem *sem);
	void (*sem_down)(struct lkl_sem *sem);

	struct lkl_mutex *(*mutex_alloc)(void);
	void (*mutex_free)(struct lkl_mutex *mutex);
	void (*mutex_lock)(struct lkl_mutex *mutex);
	void (*mutex_unlock)(struct lkl_mutex *mutex);

	lkl_thread_t (*thread_create)(void (*fn)(void *), void *arg);
	int (*thread_join)(lkl_thread_t thread);
	lkl_thread_t (*thread_self)(void);

	struct lkl_tls_key *(*tls_alloc)(void (*destructor)(void *));
	int (*tls_set)(struct lkl_tls_key *key, void *data);
	void *(*tls_get)(struct lkl_tls_key *key);

	void *(*mem_alloc)(unsigned long size);
	void (*mem_free)(void *addr, unsigned long size);

	unsigned long long (*monotonic_ns)(void);
	unsigned long long (*realtime_ns)(void);

	struct lkl_timer *(*timer_alloc)(void (*fn)(void *), void *arg);
	void (*timer_set_oneshot)(struct lkl_timer *timer,
				  unsigned long long delta_ns);
	void (*timer_cancel)(struct lkl_timer *timer);
	void (*timer_free)(struct lkl_timer *timer);

	int (*iomem_access)(unsigned long addr, void *val, int size,
			    int write);

	void *(*memcpy)(void *dst, const void *src, unsigned long n);
	void *(*memset)(void *dst, int c, unsigned long n);
	void *(*memmove)(void *dst, const void *src, unsigned long n);
};

/*
 * Entry points. lkl_start_kernel() boots and returns once every initcall
 * has run; mem_size is the RAM given to the kernel, cmdline is appended to
 * the built-in command line. Afterwards any host thread may call
 * lkl_syscall(); each thread gets its own kernel task on its first call.
 * lkl_trigger_irq() may be called from any host thread at any time.
 * lkl_halt() powers the kernel off for good; later calls fail with -ESHUTDOWN
 * (hosts must sync and unmount first). lkl_cpu_progress() tells a host
 * watchdog whether kernel code runs now and how often the CPU changed hands.
 */
int lkl_start_kernel(const struct lkl_host_ops *ops, unsigned long mem_size,
		     const char *cmdline);
long lkl_syscall(long nr, const long *args);
int lkl_trigger_irq(int irq);
int lkl_halt(void);
int lkl_cpu_progress(unsigned long *grants);

#endif /* _UAPI_ASM_LKLRS_HOST_OPS_H */
