/* procwatch: tight /proc polling for bench/core.sh.
 *
 * A process "matches" ARG when its argv[1] is exactly ARG (e.g. `sleep 1000001`,
 * `/bin/sleep 1000001`, `stopslow 1000003`, `flood /dev/shm/.../x.time ...`).
 * A process that is forked but has not exec'd yet still shows its parent's
 * cmdline, so a match means the service's exec has happened.
 *
 *   procwatch count ARG                  print how many match now
 *   procwatch pids ARG                   print matching pids, one a line
 *   procwatch wait-count ARG N TIMEOUT   poll until >= N match; print CLOCK_REALTIME
 *                                        seconds at that moment (exit 1 on timeout)
 *   procwatch restart ARG TIMEOUT        SIGKILL the (first) matching pid, poll until a
 *                                        matching pid not seen before exists; print ms
 *   procwatch term-exit PID SIG ARG TIMEOUT
 *                                        send SIG to PID, poll until PID is gone or a
 *                                        zombie and nothing matches ARG; print seconds
 *   procwatch now                        print CLOCK_REALTIME seconds
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Pause between /proc scans (PROCWATCH_POLL_US, default 200 us): on a 2-core box a
 * pure busy loop would steal a core from the supervisor being measured. */
static useconds_t poll_us = 200;
static void nap(void) { if (poll_us) usleep(poll_us); }

static double now(clockid_t c) {
    struct timespec ts;
    clock_gettime(c, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int matches(const char *pid, const char *arg) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%s/cmdline", pid);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = 0;
    size_t l0 = strlen(buf);
    if ((ssize_t)l0 + 1 >= n) return 0;           /* no argv[1] */
    return strcmp(buf + l0 + 1, arg) == 0;        /* argv[1] == ARG */
}

/* Scan /proc; return match count, store up to max pids. */
static int scan(const char *arg, int *pids, int max) {
    DIR *d = opendir("/proc");
    if (!d) { perror("/proc"); exit(2); }
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] < '1' || e->d_name[0] > '9') continue;
        if (matches(e->d_name, arg)) {
            if (n < max) pids[n] = atoi(e->d_name);
            n++;
        }
    }
    closedir(d);
    return n;
}

static int alive_not_zombie(int pid) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    return !(p && p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X'));
}

static void usage(void) {
    fprintf(stderr, "usage: see the comment in procwatch.c\n");
    exit(2);
}

int main(int argc, char **argv) {
    static int pids[65536];
    if (argc < 2) usage();
    const char *cmd = argv[1];
    if (getenv("PROCWATCH_POLL_US")) poll_us = (useconds_t)atoi(getenv("PROCWATCH_POLL_US"));
    if (!strcmp(cmd, "now")) {
        printf("%.6f\n", now(CLOCK_REALTIME));
    } else if (!strcmp(cmd, "count") && argc == 3) {
        printf("%d\n", scan(argv[2], pids, 0));
    } else if (!strcmp(cmd, "pids") && argc == 3) {
        int n = scan(argv[2], pids, 65536);
        for (int i = 0; i < n && i < 65536; i++) printf("%d\n", pids[i]);
    } else if (!strcmp(cmd, "wait-count") && argc == 5) {
        int want = atoi(argv[3]);
        double deadline = now(CLOCK_MONOTONIC) + atof(argv[4]);
        while (scan(argv[2], pids, 0) < want) {
            if (now(CLOCK_MONOTONIC) > deadline) return 1;
            nap();
        }
        printf("%.6f\n", now(CLOCK_REALTIME));
    } else if (!strcmp(cmd, "restart") && argc == 4) {
        static int old[64];
        int nold = scan(argv[2], old, 64);
        if (nold < 1) { fprintf(stderr, "procwatch: no %s\n", argv[2]); return 1; }
        if (nold > 64) nold = 64;
        double t0 = now(CLOCK_MONOTONIC), deadline = t0 + atof(argv[3]);
        if (kill(old[0], SIGKILL) < 0) { perror("kill"); return 1; }
        for (;;) {
            int n = scan(argv[2], pids, 64);
            for (int i = 0; i < n && i < 64; i++) {
                int known = 0;
                for (int j = 0; j < nold; j++) known |= pids[i] == old[j];
                if (!known) {
                    printf("%.3f\n", (now(CLOCK_MONOTONIC) - t0) * 1e3);
                    return 0;
                }
            }
            if (now(CLOCK_MONOTONIC) > deadline) return 1;
            nap();
        }
    } else if (!strcmp(cmd, "term-exit") && argc == 6) {
        int pid = atoi(argv[2]), sig = atoi(argv[3]);
        double t0 = now(CLOCK_MONOTONIC), deadline = t0 + atof(argv[5]);
        if (kill(pid, sig) < 0) { perror("kill"); return 1; }
        while (alive_not_zombie(pid) || scan(argv[4], pids, 0) > 0) {
            if (now(CLOCK_MONOTONIC) > deadline) return 1;
            nap();
        }
        printf("%.3f\n", now(CLOCK_MONOTONIC) - t0);
    } else {
        usage();
    }
    return 0;
}
