/*
 * The process kubelet's stand-in for a pod network namespace, preloaded into every container
 * (LD_PRELOAD). Pods share the host's network stack here, each with its own address from
 * 198.18.0.0/16 (see tests/support/podnet.py); a server that binds "every address"
 * (0.0.0.0 or ::), as it would inside its own namespace, is bound to its pod IP instead, so
 * two pods can both listen on :8080. Every other bind() is left alone.
 *
 * The pod IP comes from PROCESS_KUBELET_POD_IP. Binaries that make system calls without libc
 * (static Go programs) are not covered; the kubelet runs only the project's Python images.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static int (*real_bind)(int, const struct sockaddr *, socklen_t);
static struct in_addr pod_ip;
static int have_pod_ip;

__attribute__((constructor)) static void init(void) {
    const char *ip = getenv("PROCESS_KUBELET_POD_IP");
    have_pod_ip = ip != NULL && inet_pton(AF_INET, ip, &pod_ip) == 1;
    real_bind = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "bind");
}

int bind(int fd, const struct sockaddr *addr, socklen_t len) {
    if (real_bind == NULL) init();
    if (have_pod_ip && addr != NULL && addr->sa_family == AF_INET
        && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        struct sockaddr_in in4;
        memcpy(&in4, addr, sizeof in4);
        if (in4.sin_addr.s_addr == htonl(INADDR_ANY)) {
            in4.sin_addr = pod_ip;
            return real_bind(fd, (const struct sockaddr *)&in4, sizeof in4);
        }
    }
    if (have_pod_ip && addr != NULL && addr->sa_family == AF_INET6
        && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 in6;
        memcpy(&in6, addr, sizeof in6);
        if (memcmp(&in6.sin6_addr, &in6addr_any, sizeof in6addr_any) == 0) {
            /* "::" would take every IPv4 address too: the IPv4-mapped pod IP takes only ours */
            int off = 0;
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off);
            memset(&in6.sin6_addr, 0, sizeof in6.sin6_addr);
            in6.sin6_addr.s6_addr[10] = 0xff;
            in6.sin6_addr.s6_addr[11] = 0xff;
            memcpy(&in6.sin6_addr.s6_addr[12], &pod_ip, 4);
            return real_bind(fd, (const struct sockaddr *)&in6, sizeof in6);
        }
    }
    return real_bind(fd, addr, len);
}
