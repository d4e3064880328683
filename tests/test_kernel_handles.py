"""Handle tables: expectations from fs/file.c, dup(2), fork(2) and measurements in linux.md §1."""

from kharness import K


def test_lowest_free_fd():
    # measured (linux.md §1): fds 3,4,5; close(4); next socket() -> 4
    k = K()
    assert [k.ok("a", "socket") for _ in range(3)] == [3, 4, 5]
    k.ok("a", "close", sock=4)
    assert k.ok("a", "socket") == 4


def test_fd_numbers_are_per_process():
    # fs/file.c alloc_fd(): each files_struct allocates independently
    k = K()
    assert k.ok("a", "socket") == 3
    assert k.ok("b", "socket") == 3


def test_emfile_at_rlimit():
    # alloc_fd(): fd >= RLIMIT_NOFILE -> EMFILE (measured: limit 64, EMFILE after 53 new with 11 open)
    k = K(nofile=6)
    assert [k.ok("a", "socket") for _ in range(3)] == [3, 4, 5]
    assert k.err("a", "socket") == "EMFILE"


def test_emfile_on_accept_leaves_connection_queued():
    # __sys_accept4_file() reserves the fd first (measured linux.md §1: accept -> EMFILE, Recv-Q stays 1)
    k = K(nofile=5)
    lst = k.server("a")  # fd 3
    c = k.ok("b", "socket")
    k.ok("b", "connect", sock=c, addr="127.0.0.1", port=8080)
    k.ok("a", "socket")  # fd 4: table full
    assert k.err("a", "accept", sock=lst) == "EMFILE"
    k.ok("a", "close", sock=4)
    assert k.ok("a", "accept", sock=lst) == 4


def test_enfile_only_without_cap_sys_admin():
    # fs/file_table.c alloc_empty_file(): privileged users can go above max_files
    k = K(procs=("root",), uid=0)
    k.k.files.file_max = 1
    k.ok("root", "socket")
    assert k.ok("root", "socket") == 4
    k2 = K(procs=("user",), uid=1000)
    k2.k.files.file_max = 1
    k2.ok("user", "socket")
    assert k2.err("user", "socket") == "ENFILE"


def test_close_twice_is_ebadf_and_std_fd_is_enotsock():
    # close(2): EBADF; net/socket.c sock_from_file(): ENOTSOCK for a non-socket fd (measured §1)
    k = K()
    fd = k.ok("a", "socket")
    k.ok("a", "close", sock=fd)
    assert k.err("a", "close", sock=fd) == "EBADF"
    assert k.err("a", "bind", sock=1, addr="127.0.0.1", port=1234) == "ENOTSOCK"
    assert k.err("a", "listen", sock=99) == "EBADF"


def test_dup_shares_socket_close_one_copy_sends_nothing():
    # measured §1: closing one copy keeps the connection ESTABLISHED; last close -> FIN_WAIT2
    k = K()
    lst, s, c = k.pair()
    d = k.ok("a", "dup", sock=s)
    assert d == s + 1
    k.ok("a", "close", sock=s)
    assert k.states(8080)["local"] == ["ESTABLISHED", "LISTEN"]
    k.ok("a", "close", sock=d)
    assert k.states(8080)["local"] == ["FIN_WAIT2", "LISTEN"]
    assert k.states(8080)["remote"] == ["CLOSE_WAIT"]


def test_dup2_rules():
    # dup2(2): target >= RLIMIT_NOFILE -> EBADF (measured §1); an open target is closed silently
    k = K(nofile=10)
    a = k.ok("a", "socket")
    b = k.ok("a", "socket")
    assert k.err("a", "dup2", sock=a, fd=10) == "EBADF"
    assert k.ok("a", "dup2", sock=a, fd=b) == b
    assert k.ok("a", "getsockname", sock=b) == 0


def test_fork_shares_and_child_close_sends_nothing():
    # measured §1: child close/exit -> parent's connection stays ESTABLISHED
    k = K()
    lst, s, c = k.pair()
    k.ok("a", "fork", **{"as": "child"})
    k.ok("child", "close", sock=s)
    k.ok("child", "exit")
    assert "ESTABLISHED" in k.states(8080)["local"]
    k.ok("a", "close", sock=s)
    assert k.states(8080)["remote"] == ["CLOSE_WAIT"]


def test_shutdown_acts_on_every_copy():
    # measured §1: SHUT_WR via dup A -> peer reads EOF, write via dup B -> EPIPE
    k = K()
    lst, s, c = k.pair()
    d = k.ok("a", "dup", sock=s)
    k.ok("a", "shutdown", sock=s, how="SHUT_WR")
    assert k.ok("b", "recv", sock=c, bytes=10) == 0
    assert k.err("a", "send", sock=d, bytes=10) == "EPIPE"


def test_nonblock_flag_lives_on_the_open_file():
    # fcntl(2): O_NONBLOCK is a file status flag shared by duplicated descriptors
    k = K()
    lst = k.server("a")
    d = k.ok("a", "dup", sock=lst)
    k.ok("a", "set_nonblocking", sock=lst, on=True)
    assert k.err("a", "accept", sock=d) == "EAGAIN"
