/* Load generator for bench/modbus_bench.py: N forked libmodbus TCP clients, each doing
 * R reads of COUNT input registers (FC04) from address 0 on unit 1, checking every answer
 * (register i must hold i). Latencies go to a shared array; the parent prints one JSON line:
 * {"clients":N,"requests":..,"wall_s":..,"rps":..,"p50_us":..,"p99_us":..,"max_us":..}
 *
 * Build: gcc -O2 -o modbus_client modbus_client.c $(pkg-config --cflags --libs libmodbus)
 * Usage: modbus_client HOST PORT CLIENTS REQUESTS_PER_CLIENT [COUNT=100]
 */
#include <errno.h>
#include <modbus.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static int client(const char *host, int port, int count, int nreq, uint32_t *lat,
                  int ready_fd, int go_fd) {
    uint16_t regs[MODBUS_MAX_READ_REGISTERS];
    modbus_t *ctx = modbus_new_tcp(host, port);
    if (ctx == NULL || modbus_set_slave(ctx, 1) == -1 || modbus_connect(ctx) == -1) {
        fprintf(stderr, "connect: %s\n", modbus_strerror(errno));
        return 1;
    }
    modbus_set_response_timeout(ctx, 2, 0);
    for (int i = 0; i < 200; i++) { /* warm-up */
        if (modbus_read_input_registers(ctx, 0, count, regs) != count) {
            fprintf(stderr, "warm-up read: %s\n", modbus_strerror(errno));
            return 1;
        }
    }
    char c = 'r';
    if (write(ready_fd, &c, 1) != 1) return 1;
    close(ready_fd); /* the parent sees EOF once every client is ready or dead */
    if (read(go_fd, &c, 1) != 1) return 1;
    for (int i = 0; i < nreq; i++) {
        double t0 = now_s();
        int rc = modbus_read_input_registers(ctx, 0, count, regs);
        double t1 = now_s();
        if (rc != count || regs[count - 1] != count - 1 || regs[0] != 0) {
            fprintf(stderr, "read %d: rc %d (%s)\n", i, rc, modbus_strerror(errno));
            return 1;
        }
        lat[i] = (uint32_t)((t1 - t0) * 1e9);
    }
    modbus_close(ctx);
    modbus_free(ctx);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s HOST PORT CLIENTS REQUESTS [COUNT]\n", argv[0]);
        return 2;
    }
    const char *host = argv[1];
    int port = atoi(argv[2]), nclients = atoi(argv[3]), nreq = atoi(argv[4]);
    int count = argc > 5 ? atoi(argv[5]) : 100;
    size_t total = (size_t)nclients * nreq;
    uint32_t *lat = mmap(NULL, total * sizeof(uint32_t), PROT_READ | PROT_WRITE,
                         MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    int ready[2], go[2];
    if (lat == MAP_FAILED || pipe(ready) || pipe(go)) return 2;
    for (int k = 0; k < nclients; k++) {
        pid_t pid = fork();
        if (pid == 0) {
            close(ready[0]);
            close(go[1]);
            _exit(client(host, port, count, nreq, lat + (size_t)k * nreq, ready[1], go[0]));
        }
        if (pid < 0) return 2;
    }
    close(ready[1]);
    close(go[0]);
    char c;
    int nready = 0;
    while (nready < nclients && read(ready[0], &c, 1) == 1) nready++;
    double t0 = now_s();
    for (int k = 0; k < nready; k++)
        if (write(go[1], "g", 1) != 1) break;
    close(go[1]);
    int failed = nready < nclients, status;
    for (int k = 0; k < nclients; k++) {
        wait(&status);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) failed = 1;
    }
    double wall = now_s() - t0;
    if (failed) {
        fprintf(stderr, "a client failed\n");
        return 1;
    }
    qsort(lat, total, sizeof(uint32_t), cmp_u32);
    printf("{\"clients\":%d,\"requests\":%zu,\"wall_s\":%.6f,\"rps\":%.1f,"
           "\"p50_us\":%.1f,\"p99_us\":%.1f,\"max_us\":%.1f}\n",
           nclients, total, wall, total / wall, lat[total / 2] / 1e3,
           lat[(size_t)(total * 0.99)] / 1e3, lat[total - 1] / 1e3);
    return 0;
}
