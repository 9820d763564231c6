# cython: language_level=3, boundscheck=False, wraparound=False
"""Batched UDP I/O, compiled twin: ``recvmmsg`` / ``sendmmsg`` with UDP GRO / GSO on Linux.

The pure twin (``ptproxy.tunnel._udpio_py``) documents the contract; this twin keeps it with fewer
system calls: one ``recvmmsg`` drains up to ``max_datagrams`` datagrams, one ``sendmmsg`` sends a whole
flight, and with UDP GSO (``UDP_SEGMENT``, Linux 4.18) a run of equal-size datagrams to one peer
leaves as one super-datagram the kernel (or the NIC) cuts into packets. With UDP GRO (``UDP_GRO``,
Linux 5.0, enabled per socket by :func:`enable_gro`) the kernel may hand us several datagrams of one
flow glued together, with the segment size in a control message; we split them again.

Every path falls back: no ``recvmmsg`` / ``sendmmsg`` (ENOSYS: old kernel, seccomp) → one
``recvmsg`` / ``sendmsg`` per datagram; a GSO send refused (EAGAIN, EINVAL: a segment above the path
MTU, EIO: no checksum offload on the route, which also turns GSO off for the process) → its datagrams
one by one. Outside Linux the module still compiles and behaves like the pure twin.

No call releases the GIL: the sockets are non-blocking (``MSG_DONTWAIT``), each call is a few
microseconds, and holding the GIL is what lets the buffers below be module-wide and reused.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_Check, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.errno cimport (
    EAFNOSUPPORT, EAGAIN, EINTR, EINVAL, EIO, EMSGSIZE, ENOBUFS, ENOPROTOOPT, ENOSYS, EOPNOTSUPP, errno,
)
from libc.stdint cimport uint16_t, uint32_t
from libc.string cimport memcmp, memcpy, memset, strerror, strlen

cdef extern from "Python.h":
    int PyObject_AsFileDescriptor(object o) except -1

cdef extern from *:
    """
    #include <errno.h>
    #include <string.h>
    #include <stdint.h>
    #include <sys/types.h>
    #include <sys/socket.h>
    #include <sys/uio.h>
    #include <netinet/in.h>
    #include <arpa/inet.h>
    #include <net/if.h>

    /* glibc 2.17 (manylinux2014) headers predate UDP GSO/GRO: the values are the kernel's ABI. */
    #ifndef SOL_UDP
    #define SOL_UDP 17
    #endif
    #ifndef UDP_SEGMENT
    #define UDP_SEGMENT 103
    #endif
    #ifndef UDP_GRO
    #define UDP_GRO 104
    #endif
    #ifndef MSG_DONTWAIT
    #define MSG_DONTWAIT 0
    #endif

    /* Room per received datagram for control messages: UDP_GRO's int, plus slack for any other
       (IP_PKTINFO, TOS) a caller may have enabled; a truncated extra only sets MSG_CTRUNC. */
    #define PTP_RCTRL 128
    #define PTP_SCTRL CMSG_SPACE(sizeof(uint16_t))

    #if defined(__linux__)
    #define PTP_LINUX 1
    typedef struct mmsghdr ptp_mmsghdr;
    static int ptp_recvmmsg(int fd, ptp_mmsghdr *v, unsigned int n, int flags) {
        return recvmmsg(fd, v, n, flags, NULL);
    }
    static int ptp_sendmmsg(int fd, ptp_mmsghdr *v, unsigned int n, int flags) {
        return sendmmsg(fd, v, n, flags);
    }
    #else
    /* Elsewhere the batch calls report ENOSYS, which selects the one-datagram path at run time. */
    #define PTP_LINUX 0
    typedef struct { struct msghdr msg_hdr; unsigned int msg_len; } ptp_mmsghdr;
    static int ptp_recvmmsg(int fd, ptp_mmsghdr *v, unsigned int n, int flags) {
        (void)fd; (void)v; (void)n; (void)flags; errno = ENOSYS; return -1;
    }
    static int ptp_sendmmsg(int fd, ptp_mmsghdr *v, unsigned int n, int flags) {
        (void)fd; (void)v; (void)n; (void)flags; errno = ENOSYS; return -1;
    }
    #endif

    /* The GRO segment size of a received message, 0 when it is one plain datagram. */
    static int ptp_gro_size(struct msghdr *m) {
        struct cmsghdr *c;
        int size;
        for (c = CMSG_FIRSTHDR(m); c != NULL; c = CMSG_NXTHDR(m, c)) {
            if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
                memcpy(&size, CMSG_DATA(c), sizeof size);
                return size;
            }
        }
        return 0;
    }

    /* Attach a UDP_SEGMENT control message (the GSO segment size, a u16 for the kernel). */
    static void ptp_set_segment(struct msghdr *m, char *ctrl, uint16_t size) {
        struct cmsghdr *c;
        memset(ctrl, 0, PTP_SCTRL);
        m->msg_control = ctrl;
        m->msg_controllen = PTP_SCTRL;
        c = CMSG_FIRSTHDR(m);
        c->cmsg_level = SOL_UDP;
        c->cmsg_type = UDP_SEGMENT;
        c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
        memcpy(CMSG_DATA(c), &size, sizeof size);
    }

    static int ptp_is_v4_mapped(const struct in6_addr *a) {
        static const unsigned char prefix[12] = {0,0,0,0,0,0,0,0,0,0,0xff,0xff};
        return memcmp(a->s6_addr, prefix, 12) == 0;
    }
    """
    int PTP_LINUX
    int PTP_RCTRL
    size_t PTP_SCTRL
    int SOL_UDP
    int UDP_SEGMENT
    int UDP_GRO
    int MSG_DONTWAIT
    int MSG_TRUNC
    int EWOULDBLOCK
    int AF_INET
    int AF_INET6
    int INET6_ADDRSTRLEN

    ctypedef unsigned int socklen_t
    ctypedef unsigned short sa_family_t

    struct iovec:
        void *iov_base
        size_t iov_len

    struct msghdr:
        void *msg_name
        socklen_t msg_namelen
        iovec *msg_iov
        size_t msg_iovlen
        void *msg_control
        size_t msg_controllen
        int msg_flags

    ctypedef struct ptp_mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len

    struct sockaddr:
        sa_family_t sa_family

    struct sockaddr_storage:
        sa_family_t ss_family

    struct in_addr:
        uint32_t s_addr

    struct in6_addr:
        unsigned char s6_addr[16]

    struct sockaddr_in:
        sa_family_t sin_family
        uint16_t sin_port
        in_addr sin_addr

    struct sockaddr_in6:
        sa_family_t sin6_family
        uint16_t sin6_port
        uint32_t sin6_flowinfo
        in6_addr sin6_addr
        uint32_t sin6_scope_id

    int ptp_recvmmsg(int fd, ptp_mmsghdr *v, unsigned int n, int flags)
    int ptp_sendmmsg(int fd, ptp_mmsghdr *v, unsigned int n, int flags)
    int ptp_gro_size(msghdr *m)
    void ptp_set_segment(msghdr *m, char *ctrl, uint16_t size)
    int ptp_is_v4_mapped(const in6_addr *a)

    ssize_t recvmsg(int fd, msghdr *m, int flags)
    ssize_t sendmsg(int fd, const msghdr *m, int flags)
    int getsockname(int fd, sockaddr *addr, socklen_t *length)
    int setsockopt(int fd, int level, int name, const void *value, socklen_t length)
    const char *inet_ntop(int family, const void *src, char *dst, socklen_t size)
    int inet_pton(int family, const char *src, void *dst)
    unsigned int if_nametoindex(const char *name)
    uint16_t htons(uint16_t)
    uint16_t ntohs(uint16_t)
    uint32_t htonl(uint32_t)
    uint32_t ntohl(uint32_t)

__all__ = ["MAX_SEGMENTS", "capabilities", "enable_gro", "recv_batch", "send_batch"]

#: Most datagrams one UDP GSO send may carry (the kernel's UDP_MAX_SEGMENTS).
MAX_SEGMENTS = 64
cdef enum:
    _MAX_SEGMENTS = 64
    # One GSO send is one IP packet before segmentation: its UDP payload must fit the 16-bit
    # length less the headers (65535 - 40 - 8 for IPv6; IPv4 allows 20 more, not worth a case).
    _GSO_MAX_BYTES = 65487
    # The kernel caps one recvmmsg/sendmmsg at UIO_MAXIOV messages; more would hog the loop anyway.
    _MAX_BATCH = 1024

# -- detection ----------------------------------------------------------------------------------

cdef bint _have_recvmmsg = PTP_LINUX
cdef bint _have_sendmmsg = PTP_LINUX
# -1: not probed yet; then 0/1. GSO can also be switched off later by an EIO on a GSO send.
cdef int _gso = -1
cdef int _gro = -1


cdef bint _errno_not_now(int err) noexcept:
    """A full socket buffer (EAGAIN) or device queue (ENOBUFS): try later, not a failure."""
    return err == EAGAIN or err == EWOULDBLOCK or err == ENOBUFS


cdef bint _gso_refusal(int err) noexcept:
    """Errors a GSO send can have where one datagram at a time may still go."""
    return (
        _errno_not_now(err) or err == EINVAL or err == EIO or err == EMSGSIZE
        or err == ENOPROTOOPT or err == EOPNOTSUPP
    )


cdef object _os_error(int err):
    # OSError(errno, text) picks the subclass itself (ConnectionRefusedError, BlockingIOError, ...),
    # as the socket module's own calls do.
    return OSError(err, strerror(err).decode("utf-8", "replace"))


def _probe() -> None:
    """Detect UDP GSO / GRO once, on a throwaway socket (and a loopback pair, to see GSO work)."""
    global _gso, _gro, _have_recvmmsg, _have_sendmmsg
    import socket
    import struct

    _gso = 0
    _gro = 0
    if not PTP_LINUX:
        return
    try:
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    except OSError:
        return
    cdef ptp_mmsghdr none
    with probe:
        # An empty batch tells "no such system call" (old kernel, seccomp filter) from support.
        if ptp_sendmmsg(probe.fileno(), &none, 0, MSG_DONTWAIT) < 0 and errno == ENOSYS:
            _have_sendmmsg = False
        if ptp_recvmmsg(probe.fileno(), &none, 0, MSG_DONTWAIT) < 0 and errno == ENOSYS:
            _have_recvmmsg = False
        try:
            probe.setsockopt(SOL_UDP, UDP_GRO, 1)
            _gro = 1
        except OSError:
            pass
        try:
            probe.setsockopt(SOL_UDP, UDP_SEGMENT, 1200)
        except OSError:
            return
        _gso = 1
        # The option exists; check the kernel really cuts: two 4-byte segments must arrive as two
        # datagrams on a receiver without GRO. No loopback (odd namespaces): trust the option.
        try:
            sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        except OSError:
            return
        with sink:
            try:
                sink.bind(("127.0.0.1", 0))
                probe.setsockopt(SOL_UDP, UDP_SEGMENT, 0)
                probe.sendmsg(
                    [b"ptp1ptp2"],
                    [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", 4))],
                    0,
                    sink.getsockname(),
                )
                sink.settimeout(1.0)
                first = sink.recv(64)
                sink.settimeout(0.2)
                second = sink.recv(64)
            except OSError:
                return
            if first != b"ptp1" or second != b"ptp2":
                _gso = 0


cdef inline void _ensure_probed():
    if _gso < 0:
        _probe()


def capabilities() -> dict:
    """What this twin uses on this machine: ``recvmmsg``, ``sendmmsg``, ``gso``, ``gro``."""
    _ensure_probed()
    return {
        "recvmmsg": bool(_have_recvmmsg),
        "sendmmsg": bool(_have_sendmmsg),
        "gso": _gso == 1,
        "gro": _gro == 1,
    }


def enable_gro(fd) -> bool:
    """Turn UDP GRO on for ``fd`` when the kernel has it; ``recv_batch`` then splits what it glues.

    With GRO on, a glued datagram can reach 64 KiB: keep ``recv_batch``'s ``bufsize`` at 65535, or
    the kernel truncates it and its tail is lost.
    """
    cdef int sfd = PyObject_AsFileDescriptor(fd)
    cdef int one = 1
    _ensure_probed()
    if _gro != 1:
        return False
    return setsockopt(sfd, SOL_UDP, UDP_GRO, &one, sizeof(one)) == 0


# -- addresses ----------------------------------------------------------------------------------

# The last source address seen and its Python form: the session's peer is one address, so most
# datagrams reuse the same tuple instead of building a str and a tuple each (and callers comparing
# addresses often find them identical).
cdef sockaddr_storage _last_src
cdef socklen_t _last_src_len = 0
cdef object _last_src_obj = None


cdef object _address_from(sockaddr_storage *ss, socklen_t length):
    global _last_src_len, _last_src_obj
    cdef char host[64]
    cdef sockaddr_in *sin
    cdef sockaddr_in6 *sin6
    if length == 0:
        return None  # unnamed peer (recvfrom reports None too)
    if length == _last_src_len and memcmp(ss, &_last_src, length) == 0:
        return _last_src_obj
    if ss.ss_family == AF_INET:
        sin = <sockaddr_in *>ss
        inet_ntop(AF_INET, &sin.sin_addr, host, sizeof(host))
        obj = (host[:strlen(host)].decode("ascii"), ntohs(sin.sin_port))
    elif ss.ss_family == AF_INET6:
        sin6 = <sockaddr_in6 *>ss
        inet_ntop(AF_INET6, &sin6.sin6_addr, host, sizeof(host))
        obj = (
            host[:strlen(host)].decode("ascii"),
            ntohs(sin6.sin6_port),
            ntohl(sin6.sin6_flowinfo),
            sin6.sin6_scope_id,
        )
    else:
        return None  # not an IP socket: nothing this module is for
    if length <= sizeof(sockaddr_storage):
        memcpy(&_last_src, ss, length)
        _last_src_len = length
        _last_src_obj = obj
    return obj


# The last destination: (fd, address) and its sockaddr, so a flight to the one peer parses once.
cdef object _last_dst_key = None
cdef sockaddr_storage _last_dst
cdef socklen_t _last_dst_len = 0


cdef int _fill_destination(int fd, object address) except -1:
    """Parse ``address`` into ``_last_dst`` for ``fd``'s family (IPv4 peers of an IPv6 socket as
    v4-mapped, v4-mapped peers of an IPv4 socket as IPv4), as the pure twin's ``_normalize``."""
    global _last_dst_key, _last_dst_len
    cdef sockaddr_storage local
    cdef socklen_t local_len = sizeof(local)
    cdef unsigned char a4[4]
    cdef in6_addr a6
    cdef bint is4 = False, is6 = False
    cdef sockaddr_in *sin
    cdef sockaddr_in6 *sin6
    cdef long port, flowinfo = 0, scope_id = 0
    if type(address) is not tuple:
        raise TypeError(f"address must be a tuple or None, not {type(address).__name__}")
    n = len(address)
    if not 2 <= n <= 4 or not isinstance(address[0], str):
        raise TypeError("address must be (host, port[, flowinfo[, scope_id]]) with a str host")
    host = <str>address[0]
    port = address[1]
    if not 0 <= port <= 65535:
        raise OverflowError("port must be 0-65535.")
    if getsockname(fd, <sockaddr *>&local, &local_len) < 0:
        raise _os_error(errno)
    try:
        raw = host.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError(f"not an IP address literal: {host!r}") from None
    name, percent, scope = raw.partition(b"%")
    if not percent:
        is4 = inet_pton(AF_INET, name, a4) == 1
    if not is4:
        is6 = inet_pton(AF_INET6, name, &a6) == 1
    if not (is4 or is6):
        raise ValueError(f"not an IP address literal: {host!r}")
    memset(&_last_dst, 0, sizeof(_last_dst))
    if local.ss_family == AF_INET6:
        if n > 2:
            flowinfo = address[2]
            if not 0 <= flowinfo <= 0xFFFFF:
                raise OverflowError("flowinfo must be 0-1048575.")
        if n > 3:
            scope_id = address[3]
        if is6 and scope_id == 0 and scope:
            scope_id = int(scope) if scope.isdigit() else if_nametoindex(scope)
        sin6 = <sockaddr_in6 *>&_last_dst
        sin6.sin6_family = AF_INET6
        sin6.sin6_port = htons(<uint16_t>port)
        sin6.sin6_flowinfo = htonl(<uint32_t>flowinfo)
        sin6.sin6_scope_id = <uint32_t>scope_id
        if is4:  # ::ffff:a.b.c.d
            memset(sin6.sin6_addr.s6_addr, 0, 10)
            sin6.sin6_addr.s6_addr[10] = 0xFF
            sin6.sin6_addr.s6_addr[11] = 0xFF
            memcpy(&sin6.sin6_addr.s6_addr[12], a4, 4)
        else:
            sin6.sin6_addr = a6
        _last_dst_len = sizeof(sockaddr_in6)
    elif local.ss_family == AF_INET:
        if is6:
            if not ptp_is_v4_mapped(&a6):
                raise ValueError(f"an IPv6 address on an IPv4 socket: {host!r}")
            memcpy(a4, &a6.s6_addr[12], 4)
        sin = <sockaddr_in *>&_last_dst
        sin.sin_family = AF_INET
        sin.sin_port = htons(<uint16_t>port)
        memcpy(&sin.sin_addr, a4, 4)
        _last_dst_len = sizeof(sockaddr_in)
    else:
        raise _os_error(EAFNOSUPPORT)
    _last_dst_key = (fd, address)
    return 0


# -- buffers ------------------------------------------------------------------------------------

# Module-wide and grown on demand: allocating 64 x 64 KiB per call would cost more than the calls
# save. Safe to share because no call releases the GIL or re-enters.
cdef ptp_mmsghdr *_rmsgs = NULL
cdef iovec *_riov = NULL
cdef sockaddr_storage *_rnames = NULL
cdef char *_rctrl = NULL
cdef char *_rbuf = NULL
cdef Py_ssize_t _rcount = 0
cdef Py_ssize_t _rsize = 0

cdef ptp_mmsghdr *_smsgs = NULL
cdef iovec *_siov = NULL
cdef char *_sctrl = NULL
cdef Py_ssize_t *_sfirst = NULL  # message i starts at datagram _sfirst[i] ...
cdef Py_ssize_t *_scount = NULL  # ... and carries _scount[i] datagrams (more than one: GSO)
cdef Py_ssize_t _scap = 0


cdef int _ensure_recv(Py_ssize_t count, Py_ssize_t size) except -1:
    global _rmsgs, _riov, _rnames, _rctrl, _rbuf, _rcount, _rsize
    if count <= _rcount and size <= _rsize:
        return 0
    count = max(count, _rcount)
    size = max(size, _rsize)
    PyMem_Free(_rmsgs); PyMem_Free(_riov); PyMem_Free(_rnames); PyMem_Free(_rctrl); PyMem_Free(_rbuf)
    _rmsgs = <ptp_mmsghdr *>PyMem_Malloc(count * sizeof(ptp_mmsghdr))
    _riov = <iovec *>PyMem_Malloc(count * sizeof(iovec))
    _rnames = <sockaddr_storage *>PyMem_Malloc(count * sizeof(sockaddr_storage))
    _rctrl = <char *>PyMem_Malloc(count * PTP_RCTRL)
    _rbuf = <char *>PyMem_Malloc(count * size)
    if not (_rmsgs and _riov and _rnames and _rctrl and _rbuf):
        PyMem_Free(_rmsgs); PyMem_Free(_riov); PyMem_Free(_rnames); PyMem_Free(_rctrl); PyMem_Free(_rbuf)
        _rmsgs = NULL; _riov = NULL; _rnames = NULL; _rctrl = NULL; _rbuf = NULL
        _rcount = _rsize = 0
        raise MemoryError()
    _rcount = count
    _rsize = size
    return 0


cdef int _ensure_send(Py_ssize_t count) except -1:
    global _smsgs, _siov, _sctrl, _sfirst, _scount, _scap
    if count <= _scap:
        return 0
    count = max(count, 2 * _scap, 64)
    PyMem_Free(_smsgs); PyMem_Free(_siov); PyMem_Free(_sctrl); PyMem_Free(_sfirst); PyMem_Free(_scount)
    _smsgs = <ptp_mmsghdr *>PyMem_Malloc(count * sizeof(ptp_mmsghdr))
    _siov = <iovec *>PyMem_Malloc(count * sizeof(iovec))
    _sctrl = <char *>PyMem_Malloc(count * PTP_SCTRL)
    _sfirst = <Py_ssize_t *>PyMem_Malloc(count * sizeof(Py_ssize_t))
    _scount = <Py_ssize_t *>PyMem_Malloc(count * sizeof(Py_ssize_t))
    if not (_smsgs and _siov and _sctrl and _sfirst and _scount):
        PyMem_Free(_smsgs); PyMem_Free(_siov); PyMem_Free(_sctrl); PyMem_Free(_sfirst); PyMem_Free(_scount)
        _smsgs = NULL; _siov = NULL; _sctrl = NULL; _sfirst = NULL; _scount = NULL
        _scap = 0
        raise MemoryError()
    _scap = count
    return 0


# -- receive ------------------------------------------------------------------------------------


def recv_batch(fd, int max_datagrams=64, Py_ssize_t bufsize=65535) -> list:
    """Read up to ``max_datagrams`` queued messages (more datagrams when GRO glued some); ``[]``
    when none is queued. Errors as the pure twin: raised with nothing read, else the batch ends (the
    kernel keeps a pending socket error for the next call)."""
    global _have_recvmmsg
    cdef int sfd = PyObject_AsFileDescriptor(fd)
    cdef Py_ssize_t i, got, length, seg, off
    cdef int r, err = 0
    cdef msghdr *m
    cdef char *data
    if max_datagrams < 1:
        raise ValueError("max_datagrams must be at least 1")
    if bufsize < 1:
        raise ValueError("bufsize must be at least 1")
    if max_datagrams > _MAX_BATCH:
        max_datagrams = _MAX_BATCH
    _ensure_recv(max_datagrams, bufsize)
    for i in range(max_datagrams):
        # The kernel rewrites the lengths on every call: reset them.
        _riov[i].iov_base = _rbuf + i * bufsize
        _riov[i].iov_len = <size_t>bufsize
        m = &_rmsgs[i].msg_hdr
        m.msg_name = &_rnames[i]
        m.msg_namelen = sizeof(sockaddr_storage)
        m.msg_iov = &_riov[i]
        m.msg_iovlen = 1
        m.msg_control = _rctrl + i * PTP_RCTRL
        m.msg_controllen = PTP_RCTRL
        m.msg_flags = 0
        _rmsgs[i].msg_len = 0

    got = 0
    while True:
        if _have_recvmmsg:
            r = ptp_recvmmsg(sfd, _rmsgs, <unsigned int>max_datagrams, MSG_DONTWAIT)
            if r >= 0:
                got = r
                break
            err = errno
            if err == EINTR:
                continue
            if err == ENOSYS:
                _have_recvmmsg = False
                continue
        else:
            # One recvmsg per datagram, into the same slots the batch call would fill.
            r = <int>recvmsg(sfd, &_rmsgs[got].msg_hdr, MSG_DONTWAIT)
            if r >= 0:
                _rmsgs[got].msg_len = <unsigned int>r
                got += 1
                if got < max_datagrams:
                    continue
                break
            err = errno
            if err == EINTR:
                continue
            if got:
                break
        if err == EAGAIN or err == EWOULDBLOCK:
            return []
        raise _os_error(err)

    out = []
    for i in range(got):
        m = &_rmsgs[i].msg_hdr
        address = _address_from(&_rnames[i], m.msg_namelen)
        data = _rbuf + i * bufsize
        length = _rmsgs[i].msg_len
        if length > bufsize:
            length = bufsize
        seg = ptp_gro_size(m) if m.msg_controllen else 0
        if seg <= 0 or seg >= length:
            out.append((PyBytes_FromStringAndSize(data, length), address))
            continue
        # Glued by GRO: every segment is ``seg`` bytes except a shorter last one.
        off = 0
        while off < length:
            out.append((PyBytes_FromStringAndSize(data + off, min(seg, length - off)), address))
            off += seg
    return out


# -- send ---------------------------------------------------------------------------------------


cdef Py_ssize_t _send_one(int fd, msghdr *template, iovec *iov, int *err) noexcept:
    """sendmsg one datagram with ``template``'s destination and no control message; -1 and
    ``err`` set on failure (EINTR retried)."""
    cdef msghdr one
    memset(&one, 0, sizeof(one))
    one.msg_name = template.msg_name
    one.msg_namelen = template.msg_namelen
    one.msg_iov = iov
    one.msg_iovlen = 1
    while True:
        if sendmsg(fd, &one, MSG_DONTWAIT) >= 0:
            return 1
        err[0] = errno
        if err[0] != EINTR:
            return -1


def send_batch(fd, datagrams, address, *, bint gso=True) -> int:
    """Send ``datagrams`` in order to ``address`` (``None``: the connected peer); return how many
    went, with the pure twin's contract (fewer: buffer full or a later datagram failed; an error on
    the first raises). ``gso=False`` forces one datagram per message (benchmarks, tests)."""
    global _gso, _last_dst_key, _have_sendmmsg
    cdef int sfd = PyObject_AsFileDescriptor(fd)
    cdef Py_ssize_t n, i, j, count, size, nsize, total, nmsgs, msg, sent, first
    cdef int r, err = 0
    cdef void *name = NULL
    cdef socklen_t namelen = 0
    cdef msghdr *m
    cdef bint use_gso

    seq = datagrams if type(datagrams) is list or type(datagrams) is tuple else list(datagrams)
    n = len(seq)
    if n == 0:
        return 0
    if address is not None:
        key = (sfd, address)
        if _last_dst_key is None or key != _last_dst_key:
            _last_dst_key = None
            _fill_destination(sfd, address)
        name = &_last_dst
        namelen = _last_dst_len
    if gso:
        _ensure_probed()
    use_gso = gso and _gso == 1 and n > 1
    _ensure_send(n)

    # Group: a run of equal-size datagrams, possibly ended by one shorter, is one GSO message
    # (the kernel cuts at the first size; only the last segment may be short).
    i = 0
    nmsgs = 0
    while i < n:
        d = seq[i]
        if not PyBytes_Check(d):
            raise TypeError(f"datagrams must be bytes, not {type(d).__name__}")
        size = PyBytes_GET_SIZE(d)
        _siov[i].iov_base = PyBytes_AS_STRING(d)
        _siov[i].iov_len = <size_t>size
        count = 1
        total = size
        if use_gso and 0 < size <= _GSO_MAX_BYTES:
            while i + count < n and count < _MAX_SEGMENTS:
                d = seq[i + count]
                if not PyBytes_Check(d):
                    break  # the outer loop raises for it, before anything is sent
                nsize = PyBytes_GET_SIZE(d)
                if nsize > size or nsize == 0 or total + nsize > _GSO_MAX_BYTES:
                    break
                _siov[i + count].iov_base = PyBytes_AS_STRING(d)
                _siov[i + count].iov_len = <size_t>nsize
                count += 1
                total += nsize
                if nsize < size:
                    break
        m = &_smsgs[nmsgs].msg_hdr
        m.msg_name = name
        m.msg_namelen = namelen
        m.msg_iov = &_siov[i]
        m.msg_iovlen = <size_t>count
        m.msg_flags = 0
        if count > 1:
            ptp_set_segment(m, _sctrl + nmsgs * PTP_SCTRL, <uint16_t>size)
        else:
            m.msg_control = NULL
            m.msg_controllen = 0
        _sfirst[nmsgs] = i
        _scount[nmsgs] = count
        nmsgs += 1
        i += count

    sent = 0
    msg = 0
    while msg < nmsgs:
        if _have_sendmmsg:
            r = ptp_sendmmsg(sfd, &_smsgs[msg], <unsigned int>min(nmsgs - msg, _MAX_BATCH), MSG_DONTWAIT)
            if r < 0:
                err = errno
                if err == ENOSYS:
                    _have_sendmmsg = False
                    continue
        else:
            r = 1 if sendmsg(sfd, &_smsgs[msg].msg_hdr, MSG_DONTWAIT) >= 0 else -1
            if r < 0:
                err = errno
        if r > 0:
            for j in range(msg, msg + r):
                sent += _scount[j]
            msg += r
            continue
        if err == EINTR:
            continue
        if _scount[msg] > 1 and _gso_refusal(err):
            # A GSO message refused: no room for 64 KiB at once (EAGAIN), a segment above the path
            # MTU (EINVAL), or no checksum offload on the route (EIO: GSO is off from now on).
            # Other errors (ECONNREFUSED, ENETUNREACH) are the peer's or route's, reported below:
            # sending the same datagrams one by one would only hide them (the kernel clears them).
            if err == EIO:
                _gso = 0
            first = _sfirst[msg]
            for j in range(first, first + _scount[msg]):
                if _send_one(sfd, &_smsgs[msg].msg_hdr, &_siov[j], &err) < 0:
                    break
                sent += 1
            else:
                msg += 1
                continue
        if _errno_not_now(err) or sent:
            return sent  # the next call reports a hard error on the rest
        if err == EAFNOSUPPORT:
            _last_dst_key = None  # the descriptor may be a new socket of another family
        raise _os_error(err)
    return sent
