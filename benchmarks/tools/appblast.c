/*
 * appblast: floods a sidecar's local data plane and counts what a second
 * sidecar delivers to its application (benchmarks/bench_sidecar.py), so
 * that neither end of the measurement is Python. Loopback only; bounded
 * in time.
 *
 * The receiver socket first sends [SRC_NODE u32] to the receiving
 * sidecar's data plane (it learns where to deliver from that), then a
 * thread counts deliveries whose first four bytes are SRC_NODE. The
 * sender sends [DST_NODE u32][payload], 64 per sendmmsg, to the sending
 * sidecar's data plane for SECONDS (at most PPS a second when PPS > 0).
 * Prints one line of key=value pairs:
 *   sent_pps delivered_pps delivered sent loss bad secs payload
 *
 * usage: appblast SEND_APP_PORT RECV_APP_PORT SRC_NODE DST_NODE SECONDS PAYLOAD [PPS]
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
static uint32_t src_be;

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
            if (msgs[i].msg_len >= 4 && memcmp(buf[i], &src_be, 4) == 0) delivered++;
            else bad++;
        }
    }
    return NULL;
}

static struct sockaddr_in loopback(const char *port) {
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(port))};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return addr;
}

int main(int argc, char **argv) {
    if (argc < 7) {
        fprintf(stderr,
                "usage: appblast SEND_APP_PORT RECV_APP_PORT SRC_NODE DST_NODE SECONDS PAYLOAD [PPS]\n");
        return 2;
    }
    struct sockaddr_in send_app = loopback(argv[1]), recv_app = loopback(argv[2]);
    src_be = htonl((uint32_t)strtoul(argv[3], NULL, 10));
    uint32_t dst_be = htonl((uint32_t)strtoul(argv[4], NULL, 10));
    double duration = atof(argv[5]), pps = argc > 7 ? atof(argv[7]) : 0;
    int payload = atoi(argv[6]);
    if (payload < 0 || payload > 1400) {
        fprintf(stderr, "appblast: payload must be 0..1400\n");
        return 2;
    }
    int tx_fd = socket(AF_INET, SOCK_DGRAM, 0);
    rx_fd = socket(AF_INET, SOCK_DGRAM, 0);
    int size = 8 << 20;
    setsockopt(rx_fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    setsockopt(tx_fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
    struct sockaddr_in any = loopback("0");
    bind(rx_fd, (struct sockaddr *)&any, sizeof any);
    /* teach the receiving sidecar where its application is */
    sendto(rx_fd, &src_be, 4, 0, (struct sockaddr *)&recv_app, sizeof recv_app);
    connect(tx_fd, (struct sockaddr *)&send_app, sizeof send_app);
    pthread_t counter;
    pthread_create(&counter, NULL, count, NULL);
    unsigned char frame[4 + 1400] = {0};
    memcpy(frame, &dst_be, 4);
    enum { N = 64 };
    struct iovec iov = {frame, (size_t)(4 + payload)};
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
    usleep(500000); /* let the last deliveries arrive */
    running = 0;
    pthread_join(counter, NULL);
    printf("sent_pps=%.0f delivered_pps=%.0f delivered=%ld sent=%ld loss=%.4f bad=%ld secs=%.2f payload=%d\n",
           (double)sent / elapsed, (double)delivered / elapsed, delivered, sent,
           sent ? 1.0 - (double)delivered / (double)sent : 0.0, bad, elapsed, payload);
    return 0;
}
