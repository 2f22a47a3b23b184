/* iofault: an LD_PRELOAD shim that makes one file operation fail, or kills the process at it, so
   that tests can walk a program through every write, fsync and rename it makes.

   Only operations on files under IOFAULT_DIR count (a path prefix; for write and fsync the path of
   the descriptor, read from /proc/self/fd). Counted operations are numbered from 1 in the order
   they happen; a single-threaded writer makes the numbering the same on every run.

   IOFAULT_DIR   the directory whose files count (required; without it the shim does nothing)
   IOFAULT_AT    the number of the operation to hit (0 or unset: none, only count)
   IOFAULT_MODE  fail: that operation returns -1 with ENOSPC (write) or EIO (fsync, rename);
                 kill: the process is killed with SIGKILL at it (a write first writes half of its
                 bytes, so that a torn file is left as a crash would leave it)
   IOFAULT_LOG   a file that gets one line per counted operation: "N OP PATH"

   Build: cc -shared -fPIC -o libiofault.so tests/iofault.c -ldl */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static long g_count;

static const char *env(const char *name) {
    const char *v = getenv(name);
    return v && v[0] ? v : NULL;
}

/* 1 when path lies under IOFAULT_DIR */
static int watched(const char *path) {
    const char *dir = env("IOFAULT_DIR");
    size_t n;
    if (!dir || !path) return 0;
    n = strlen(dir);
    return strncmp(path, dir, n) == 0 && (path[n] == '/' || path[n] == 0);
}

static int fd_path(int fd, char *out, size_t size) {
    char link[64];
    ssize_t n;
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    n = readlink(link, out, size - 1);
    if (n < 0) return 0;
    out[n] = 0;
    return 1;
}

/* Counts a watched operation; returns 1 when it is the one to hit. */
static int hit(const char *op, const char *path) {
    const char *log = env("IOFAULT_LOG"), *at = env("IOFAULT_AT");
    long n = ++g_count;
    if (log) {
        static int (*real_open)(const char *, int, ...);
        static ssize_t (*real_write)(int, const void *, size_t);
        char line[PATH_MAX + 64];
        int fd, len;
        if (!real_open) real_open = (int (*)(const char *, int, ...))dlsym(RTLD_NEXT, "open");
        if (!real_write) real_write = (ssize_t(*)(int, const void *, size_t))dlsym(RTLD_NEXT, "write");
        len = snprintf(line, sizeof line, "%ld %s %s\n", n, op, path);
        fd = real_open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            if (real_write(fd, line, (size_t)len) < 0) {}
            close(fd);
        }
    }
    return at && atol(at) == n;
}

static int killing(void) {
    const char *mode = env("IOFAULT_MODE");
    return mode && !strcmp(mode, "kill");
}

ssize_t write(int fd, const void *buf, size_t count) {
    static ssize_t (*real)(int, const void *, size_t);
    char path[PATH_MAX];
    if (!real) real = (ssize_t(*)(int, const void *, size_t))dlsym(RTLD_NEXT, "write");
    if (fd > 2 && env("IOFAULT_DIR") && fd_path(fd, path, sizeof path) && watched(path) && hit("write", path)) {
        if (killing()) {
            if (count > 1 && real(fd, buf, count / 2) < 0) {}
            raise(SIGKILL);
        }
        errno = ENOSPC;
        return -1;
    }
    return real(fd, buf, count);
}

int fsync(int fd) {
    static int (*real)(int);
    char path[PATH_MAX];
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    if (env("IOFAULT_DIR") && fd_path(fd, path, sizeof path) && watched(path) && hit("fsync", path)) {
        if (killing()) raise(SIGKILL);
        errno = EIO;
        return -1;
    }
    return real(fd);
}

int rename(const char *from, const char *to) {
    static int (*real)(const char *, const char *);
    char abs[PATH_MAX];
    if (!real) real = (int (*)(const char *, const char *))dlsym(RTLD_NEXT, "rename");
    if (env("IOFAULT_DIR") && realpath(from, abs) && watched(abs) && hit("rename", to)) {
        if (killing()) raise(SIGKILL);
        errno = EIO;
        return -1;
    }
    return real(from, to);
}
