/*
 * flood.h: the sending and counting halves shared by blast.c and appblast.c
 * (benchmarks/bench_beacon.py, benchmarks/bench_sidecar.py). A sender
 * floods one datagram, 64 per sendmmsg, for a number of seconds (at most
 * PPS a second when PPS > 0) while a thread counts what arrives on another
 * socket with recvmmsg; the result is one line of key=value pairs:
 *   sent_pps delivered_pps delivered sent loss bad secs payload
 */
#ifndef NATROUTE_FLOOD_H
#define NATROUTE_FLOOD_H
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Does a received datagram count as delivered? (else it counts as bad) */
typedef int (*flood_match)(const unsigned char *data, unsigned len);

struct flood_counter {
    int fd;
    flood_match match;
    volatile int running;
    long delivered, bad;
    pthread_t thread;
};

static double flood_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void *flood_count(void *arg) {
    struct flood_counter *c = arg;
    enum { N = 64 };
    static unsigned char buf[N][2048];
    struct mmsghdr msgs[N];
    struct iovec iov[N];
    for (int i = 0; i < N; i++) {
        iov[i] = (struct iovec){buf[i], sizeof buf[i]};
        memset(&msgs[i], 0, sizeof msgs[i]);
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    struct timeval wait = {0, 100000};
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof wait);
    while (c->running) {
        int n = recvmmsg(c->fd, msgs, N, 0, NULL);
        for (int i = 0; i < n; i++) {
            if (c->match(buf[i], msgs[i].msg_len)) c->delivered++;
            else c->bad++;
        }
    }
    return NULL;
}

static void flood_count_start(struct flood_counter *c, int fd, flood_match match) {
    c->fd = fd;
    c->match = match;
    c->running = 1;
    c->delivered = c->bad = 0;
    pthread_create(&c->thread, NULL, flood_count, c);
}

/* Send frame[0:len] on the connected socket fd; returns how many went out. */
static long flood_send(int fd, unsigned char *frame, size_t len, double duration, double pps,
                       double *elapsed) {
    enum { N = 64 };
    struct iovec iov = {frame, len};
    struct mmsghdr msgs[N];
    for (int i = 0; i < N; i++) {
        memset(&msgs[i], 0, sizeof msgs[i]);
        msgs[i].msg_hdr.msg_iov = &iov;
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    long sent = 0;
    double start = flood_seconds(), end = start + duration;
    while (flood_seconds() < end) {
        if (pps > 0)
            while (start + (double)(sent + N) / pps > flood_seconds()) usleep(50);
        int n = sendmmsg(fd, msgs, N, 0);
        if (n > 0) sent += n;
        else if (errno != EAGAIN && errno != ENOBUFS && errno != ECONNREFUSED) break;
    }
    *elapsed = flood_seconds() - start;
    return sent;
}

/* Let the last datagrams arrive, stop counting, print the result line. */
static void flood_report(struct flood_counter *c, long sent, double elapsed, int payload,
                         useconds_t linger) {
    usleep(linger);
    c->running = 0;
    pthread_join(c->thread, NULL);
    printf("sent_pps=%.0f delivered_pps=%.0f delivered=%ld sent=%ld loss=%.4f bad=%ld secs=%.2f "
           "payload=%d\n",
           (double)sent / elapsed, (double)c->delivered / elapsed, c->delivered, sent,
           sent ? 1.0 - (double)c->delivered / (double)sent : 0.0, c->bad, elapsed, payload);
}

#endif
