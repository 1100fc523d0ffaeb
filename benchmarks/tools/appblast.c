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
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>

#include "flood.h"

static uint32_t src_be;

static int from_src(const unsigned char *data, unsigned len) {
    return len >= 4 && memcmp(data, &src_be, 4) == 0;
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
    int rx_fd = socket(AF_INET, SOCK_DGRAM, 0);
    int size = 8 << 20;
    setsockopt(rx_fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    setsockopt(tx_fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
    struct sockaddr_in any = loopback("0");
    bind(rx_fd, (struct sockaddr *)&any, sizeof any);
    /* teach the receiving sidecar where its application is */
    sendto(rx_fd, &src_be, 4, 0, (struct sockaddr *)&recv_app, sizeof recv_app);
    connect(tx_fd, (struct sockaddr *)&send_app, sizeof send_app);
    struct flood_counter counter;
    flood_count_start(&counter, rx_fd, from_src);
    unsigned char frame[4 + 1400] = {0};
    memcpy(frame, &dst_be, 4);
    double elapsed;
    long sent = flood_send(tx_fd, frame, (size_t)(4 + payload), duration, pps, &elapsed);
    flood_report(&counter, sent, elapsed, payload, 500000); /* let the last deliveries arrive */
    return 0;
}
