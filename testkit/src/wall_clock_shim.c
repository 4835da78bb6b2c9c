/* A preloaded library that moves a process's wall clock (CLOCK_REALTIME, gettimeofday, time)
 * by an offset in milliseconds that another process can change at any moment: the first 8
 * bytes of the file named by TESTKIT_WALL_CLOCK_FILE, a native-endian int64, mapped shared.
 * The monotonic clocks stay true, as after an NTP step of the wall clock.
 *
 * It allocates nothing and calls no clock of its own (the kernel's clock_gettime by system
 * call), so it works in servers whose allocator reads the clock while the process starts
 * (Debian's redis-server with jemalloc, where libfaketime hangs). Built by testkit with the
 * system C compiler on first use; see src/clock.rs. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static volatile const int64_t *offset_ms;
static volatile int tried;

static int64_t offset(void) {
    if (!tried) {
        tried = 1;
        const char *path = getenv("TESTKIT_WALL_CLOCK_FILE");
        if (path) {
            int fd = open(path, O_RDONLY | O_CLOEXEC);
            if (fd >= 0) {
                void *map = mmap(0, sizeof(int64_t), PROT_READ, MAP_SHARED, fd, 0);
                if (map != MAP_FAILED) offset_ms = map;
                close(fd);
            }
        }
    }
    return offset_ms ? *offset_ms : 0;
}

static int is_wall(clockid_t clock) {
    return clock == CLOCK_REALTIME || clock == CLOCK_REALTIME_COARSE;
}

int clock_gettime(clockid_t clock, struct timespec *ts) {
    long rc = syscall(SYS_clock_gettime, clock, ts);
    if (rc == 0 && is_wall(clock)) {
        int64_t ms = offset();
        int64_t ns = (int64_t)ts->tv_nsec + (ms % 1000) * 1000000;
        ts->tv_sec += ms / 1000 + ns / 1000000000;
        ns %= 1000000000;
        if (ns < 0) {
            ns += 1000000000;
            ts->tv_sec -= 1;
        }
        ts->tv_nsec = ns;
    }
    return (int)rc;
}

int gettimeofday(struct timeval *tv, void *tz) {
    (void)tz;
    struct timespec ts;
    int rc = clock_gettime(CLOCK_REALTIME, &ts);
    if (rc == 0 && tv) {
        tv->tv_sec = ts.tv_sec;
        tv->tv_usec = ts.tv_nsec / 1000;
    }
    return rc;
}

time_t time(time_t *out) {
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0) return (time_t)-1;
    if (out) *out = ts.tv_sec;
    return ts.tv_sec;
}
