/*
 * blast: floods a beacon with relay frames and counts what comes back
 * (benchmarks/bench_beacon.py). Loopback only; bounded in time.
 *
 * Two sockets register node IDs 1001 (sender) and 2002 (receiver) with
 * discovers (01|id) and wait for the replies; the sender then sends
 * 05|1001|2002|payload, 32 per sendmmsg, for SECONDS (at most PPS a second
 * when PPS > 0), while a thread counts the 06 deliveries on the receiver.
 * Prints one line of key=value pairs:
 *   sent_pps delivered_pps delivered sent loss bad secs payload
 *
 * usage: blast HOST PORT SECONDS PAYLOAD [PPS]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static volatile int running = 1;
static long delivered, bad;
static int rx_fd;

static double seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void *count(void *unused) {
    (void)unused;
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
    setsockopt(rx_fd, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof wait);
    while (running) {
        int n = recvmmsg(rx_fd, msgs, N, 0, NULL);
        for (int i = 0; i < n; i++) {
            if (msgs[i].msg_len >= 5 && buf[i][0] == 0x06) delivered++;
            else bad++;
        }
    }
    return NULL;
}

static int registered(int fd, uint32_t id) {
    unsigned char msg[5] = {0x01}, reply[64];
    uint32_t be = htonl(id);
    memcpy(msg + 1, &be, 4);
    struct timeval wait = {0, 300000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof wait);
    for (int attempt = 0; attempt < 10; attempt++) {
        send(fd, msg, sizeof msg, 0);
        ssize_t n = recv(fd, reply, sizeof reply, 0);
        if (n > 0 && reply[0] == 0x02) return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: blast HOST PORT SECONDS PAYLOAD [PPS]\n");
        return 2;
    }
    struct sockaddr_in beacon = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &beacon.sin_addr) != 1) {
        fprintf(stderr, "blast: bad host %s\n", argv[1]);
        return 2;
    }
    double duration = atof(argv[3]), pps = argc > 5 ? atof(argv[5]) : 0;
    int payload = atoi(argv[4]);
    if (payload < 0 || payload > 1400) {
        fprintf(stderr, "blast: payload must be 0..1400\n");
        return 2;
    }
    int tx_fd = socket(AF_INET, SOCK_DGRAM, 0);
    rx_fd = socket(AF_INET, SOCK_DGRAM, 0);
    int size = 8 << 20;
    setsockopt(rx_fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    setsockopt(tx_fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
    connect(tx_fd, (struct sockaddr *)&beacon, sizeof beacon);
    connect(rx_fd, (struct sockaddr *)&beacon, sizeof beacon);
    if (!registered(tx_fd, 1001) || !registered(rx_fd, 2002)) {
        fprintf(stderr, "blast: the beacon does not answer discovers\n");
        return 1;
    }
    pthread_t counter;
    pthread_create(&counter, NULL, count, NULL);
    unsigned char frame[9 + 1400] = {0x05};
    uint32_t src = htonl(1001), dst = htonl(2002);
    memcpy(frame + 1, &src, 4);
    memcpy(frame + 5, &dst, 4);
    enum { N = 32 };
    struct iovec iov = {frame, (size_t)(9 + payload)};
    struct mmsghdr msgs[N];
    for (int i = 0; i < N; i++) {
        memset(&msgs[i], 0, sizeof msgs[i]);
        msgs[i].msg_hdr.msg_iov = &iov;
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    long sent = 0;
    double start = seconds(), end = start + duration;
    while (seconds() < end) {
        if (pps > 0)
            while (start + (double)(sent + N) / pps > seconds()) usleep(50);
        int n = sendmmsg(tx_fd, msgs, N, 0);
        if (n > 0) sent += n;
        else if (errno != EAGAIN && errno != ENOBUFS && errno != ECONNREFUSED) break;
    }
    double elapsed = seconds() - start;
    usleep(300000); /* let the last deliveries arrive */
    running = 0;
    pthread_join(counter, NULL);
    printf("sent_pps=%.0f delivered_pps=%.0f delivered=%ld sent=%ld loss=%.4f bad=%ld secs=%.2f payload=%d\n",
           (double)sent / elapsed, (double)delivered / elapsed, delivered, sent,
           sent ? 1.0 - (double)delivered / (double)sent : 0.0, bad, elapsed, payload);
    return 0;
}
