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
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>

#include "flood.h"

static int is_delivery(const unsigned char *data, unsigned len) {
    return len >= 5 && data[0] == 0x06;
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
    int rx_fd = socket(AF_INET, SOCK_DGRAM, 0);
    int size = 8 << 20;
    setsockopt(rx_fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    setsockopt(tx_fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
    connect(tx_fd, (struct sockaddr *)&beacon, sizeof beacon);
    connect(rx_fd, (struct sockaddr *)&beacon, sizeof beacon);
    if (!registered(tx_fd, 1001) || !registered(rx_fd, 2002)) {
        fprintf(stderr, "blast: the beacon does not answer discovers\n");
        return 1;
    }
    struct flood_counter counter;
    flood_count_start(&counter, rx_fd, is_delivery);
    unsigned char frame[9 + 1400] = {0x05};
    uint32_t src = htonl(1001), dst = htonl(2002);
    memcpy(frame + 1, &src, 4);
    memcpy(frame + 5, &dst, 4);
    double elapsed;
    long sent = flood_send(tx_fd, frame, (size_t)(9 + payload), duration, pps, &elapsed);
    flood_report(&counter, sent, elapsed, payload, 300000); /* let the last deliveries arrive */
    return 0;
}
