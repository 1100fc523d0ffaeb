/*
 * yardstick: the least a UDP relay beacon can do, in C, as a speed reference
 * for natroute-beacon (benchmarks/bench_beacon.py). Not a beacon to deploy.
 *
 * Handles two beacon messages (docs: services/natroute/beacon/README.md):
 *   01|node_id           record node_id at the source, answer 02|4|ip|port
 *   05|src|dst|payload   send 06|src|payload to where dst was recorded
 * everything else is ignored. Batched with recvmmsg/sendmmsg (64 per call),
 * no GSO, no checks: the physical limit of relaying on this machine.
 * Node IDs live in an open-addressing table of 2^16 slots.
 *
 * usage: yardstick HOST PORT
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define BATCH 64
#define SLOTS 65536u
#define BUF 2048

struct slot {
    uint32_t id;
    int used;
    struct sockaddr_in addr;
};

static struct slot table[SLOTS];

static struct slot *find(uint32_t id, int insert) {
    uint32_t h = (id * 2654435761u) & (SLOTS - 1);
    for (uint32_t n = 0; n < SLOTS; n++, h = (h + 1) & (SLOTS - 1)) {
        if (table[h].used && table[h].id == id) return &table[h];
        if (!table[h].used) {
            if (!insert) return NULL;
            table[h].used = 1;
            table[h].id = id;
            return &table[h];
        }
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: yardstick HOST PORT\n");
        return 2;
    }
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    int size = 8 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
    struct sockaddr_in self = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &self.sin_addr) != 1 || bind(fd, (struct sockaddr *)&self, sizeof self)) {
        perror("yardstick: bind");
        return 1;
    }
    static unsigned char in[BATCH][BUF], out[BATCH][BUF];
    struct mmsghdr rx[BATCH], tx[BATCH];
    struct iovec rxv[BATCH], txv[BATCH];
    struct sockaddr_in from[BATCH], to[BATCH];
    for (;;) {
        for (int i = 0; i < BATCH; i++) {
            rxv[i] = (struct iovec){in[i], BUF};
            memset(&rx[i], 0, sizeof rx[i]);
            rx[i].msg_hdr.msg_iov = &rxv[i];
            rx[i].msg_hdr.msg_iovlen = 1;
            rx[i].msg_hdr.msg_name = &from[i];
            rx[i].msg_hdr.msg_namelen = sizeof from[i];
        }
        int n = recvmmsg(fd, rx, BATCH, MSG_WAITFORONE, NULL);
        int m = 0;
        for (int i = 0; i < n; i++) {
            unsigned char *d = in[i];
            unsigned len = rx[i].msg_len;
            uint32_t a, b;
            if (len >= 5 && d[0] == 0x01) {
                memcpy(&a, d + 1, 4);
                struct slot *s = find(ntohl(a), 1);
                if (s) s->addr = from[i];
                unsigned char *r = out[m];
                r[0] = 0x02;
                r[1] = 4;
                memcpy(r + 2, &from[i].sin_addr, 4);
                memcpy(r + 6, &from[i].sin_port, 2);
                txv[m] = (struct iovec){r, 8};
                to[m++] = from[i];
            } else if (len >= 9 && d[0] == 0x05) {
                memcpy(&b, d + 5, 4);
                struct slot *s = find(ntohl(b), 0);
                if (!s) continue;
                unsigned char *r = out[m];
                r[0] = 0x06;
                memcpy(r + 1, d + 1, 4);
                memcpy(r + 5, d + 9, len - 9);
                txv[m] = (struct iovec){r, len - 4};
                to[m++] = s->addr;
            }
        }
        for (int i = 0; i < m; i++) {
            memset(&tx[i], 0, sizeof tx[i]);
            tx[i].msg_hdr.msg_iov = &txv[i];
            tx[i].msg_hdr.msg_iovlen = 1;
            tx[i].msg_hdr.msg_name = &to[i];
            tx[i].msg_hdr.msg_namelen = sizeof to[i];
        }
        for (int done = 0; done < m;) {
            int r = sendmmsg(fd, tx + done, (unsigned)(m - done), 0);
            if (r <= 0) break; /* a full buffer drops the rest, like any UDP relay */
            done += r;
        }
    }
}
