/* The C anchor for bench/modbus_bench.py: a minimal libmodbus TCP server, the usual
 * modbus_tcp_listen + select() + modbus_receive/modbus_reply loop, serving NREGS input
 * registers (register i holds i) to any number of clients on 127.0.0.1.
 *
 * Build: gcc -O2 -o modbus_cserver modbus_cserver.c $(pkg-config --cflags --libs libmodbus)
 * Usage: modbus_cserver PORT [NREGS=200]   (prints "ready PORT" once listening)
 */
#include <errno.h>
#include <modbus.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s PORT [NREGS]\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[1]);
    int nregs = argc > 2 ? atoi(argv[2]) : 200;
    uint8_t query[MODBUS_TCP_MAX_ADU_LENGTH];
    modbus_t *ctx = modbus_new_tcp("127.0.0.1", port);
    modbus_mapping_t *map = modbus_mapping_new(0, 0, 0, nregs);
    if (ctx == NULL || map == NULL) return 1;
    for (int i = 0; i < nregs; i++) map->tab_input_registers[i] = (uint16_t)i;
    int server = modbus_tcp_listen(ctx, 64);
    if (server == -1) {
        fprintf(stderr, "listen: %s\n", modbus_strerror(errno));
        return 1;
    }
    printf("ready %d\n", port);
    fflush(stdout);
    fd_set all;
    FD_ZERO(&all);
    FD_SET(server, &all);
    int fdmax = server;
    for (;;) {
        fd_set rd = all;
        if (select(fdmax + 1, &rd, NULL, NULL, NULL) == -1) {
            if (errno == EINTR) continue;
            return 1;
        }
        for (int fd = 0; fd <= fdmax; fd++) {
            if (!FD_ISSET(fd, &rd)) continue;
            if (fd == server) {
                int c = accept(server, NULL, NULL);
                if (c >= 0) {
                    FD_SET(c, &all);
                    if (c > fdmax) fdmax = c;
                }
                continue;
            }
            modbus_set_socket(ctx, fd);
            int rc = modbus_receive(ctx, query);
            if (rc > 0) {
                modbus_reply(ctx, query, rc, map);
            } else if (rc == -1) {
                close(fd);
                FD_CLR(fd, &all);
            }
        }
    }
}
