/* Shift one process's wall clock while leaving its monotonic clock alone.
 *
 * Loaded with LD_PRELOAD by tests/faults/test_clock_jump.py. The offset, in
 * nanoseconds, is the little-endian int64 at the start of the file named by
 * WALLCLOCK_OFFSET_FILE; the file is mapped shared, so the test moves the clock
 * of a running process by rewriting those eight bytes. Only the realtime clocks
 * move: CLOCK_MONOTONIC, and every sleep and timed wait built on it, behave as
 * they do on a machine whose clock was stepped by NTP or restored from a snapshot.
 * (libfaketime either moves the monotonic clock too or breaks Python's sleep.)
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

typedef int (*clock_gettime_fn)(clockid_t, struct timespec *);

static clock_gettime_fn real_clock_gettime;
static const volatile int64_t *offset_ns;
static int mapped;

static void setup(void) {
    if (!real_clock_gettime)
        real_clock_gettime = (clock_gettime_fn)dlsym(RTLD_NEXT, "clock_gettime");
    if (mapped)
        return;
    mapped = 1;
    const char *path = getenv("WALLCLOCK_OFFSET_FILE");
    if (!path)
        return;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    void *p = mmap(NULL, sizeof(int64_t), PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (p != MAP_FAILED)
        offset_ns = p;
}

__attribute__((constructor)) static void init(void) { setup(); }

static int64_t current_offset(void) {
    return offset_ns ? __atomic_load_n(offset_ns, __ATOMIC_RELAXED) : 0;
}

int clock_gettime(clockid_t clk, struct timespec *ts) {
    setup();
    int rc = real_clock_gettime(clk, ts);
    if (rc != 0 || !(clk == CLOCK_REALTIME || clk == CLOCK_REALTIME_COARSE))
        return rc;
    int64_t ns = (int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec + current_offset();
    ts->tv_sec = ns / 1000000000;
    ts->tv_nsec = ns % 1000000000;
    if (ts->tv_nsec < 0) {
        ts->tv_nsec += 1000000000;
        ts->tv_sec -= 1;
    }
    return 0;
}

int gettimeofday(struct timeval *restrict tv, void *restrict tz) {
    (void)tz;
    struct timespec ts;
    int rc = clock_gettime(CLOCK_REALTIME, &ts);
    if (rc == 0) {
        tv->tv_sec = ts.tv_sec;
        tv->tv_usec = ts.tv_nsec / 1000;
    }
    return rc;
}

time_t time(time_t *out) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (out)
        *out = ts.tv_sec;
    return ts.tv_sec;
}
