import Foundation
import Synchronization

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// A child process in its own process group, started with `posix_spawn`, whose stdout and
/// stderr go to one pipe that a dedicated thread drains into an ``OutputTail`` while it reaps
/// the child. Nothing here blocks the cooperative thread pool.
final class ChildProcess: Sendable {
  /// How the child ended.
  struct Termination: Sendable {
    /// The raw `waitpid` status; nil when it is unknown because something else in the process
    /// reaped the child first (a `waitpid(-1, …)` elsewhere).
    var rawStatus: Int32?
    /// Whether the executor signalled the group before the leader exited.
    var wasSignalled: Bool
    /// The output's last bytes.
    var outputTail: [UInt8]

    /// The exit code, or 128 + the signal number for a child killed by a signal; nil when the
    /// status is unknown.
    var exitCode: Int32? {
      guard let rawStatus else { return nil }
      let signal = rawStatus & 0x7f
      return signal == 0 ? (rawStatus >> 8) & 0xff : 128 + signal
    }

    /// The signal that killed the child, if one did.
    var terminatingSignal: Int32? {
      guard let rawStatus else { return nil }
      let signal = rawStatus & 0x7f
      return signal == 0 || signal == 0x7f ? nil : signal
    }
  }

  private struct State {
    var reaped = false
    var signalled = false
  }

  /// The leader's pid, which is also the group's id.
  let pid: pid_t
  private let outputFD: Int32
  private let tailCapacity: Int
  private let state = Mutex(State())

  private init(pid: pid_t, outputFD: Int32, tailCapacity: Int) {
    self.pid = pid
    self.outputFD = outputFD
    self.tailCapacity = tailCapacity
  }

  /// Starts `executable` with exactly `arguments` (argv[0] included) and `environment`, in
  /// `workingDirectory`, as the leader of a new process group, stdin from /dev/null.
  static func spawn(
    executable: String, arguments: [String], environment: [String], workingDirectory: String, tailCapacity: Int
  ) throws(SpawnError) -> ChildProcess {
    makeChildrenWaitable()
    var fds: [Int32] = [-1, -1]
    guard GlibcExtensions.pipe2(&fds, O_CLOEXEC) == 0 else { throw SpawnError("pipe2", errno) }
    let readFD = fds[0]
    let writeFD = fds[1]
    defer { close(writeFD) }

    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_adddup2(&actions, writeFD, 1)
    posix_spawn_file_actions_adddup2(&actions, writeFD, 2)
    if let closeFrom = GlibcExtensions.addCloseFrom {
      _ = closeFrom(&actions, 3)
    } else {
      // A C library before glibc 2.34: every descriptor above stderr is marked close-on-exec
      // instead (those inherited without it from whatever started the executor included).
      markDescriptorsCloseOnExec(3...Int32.max)
    }
    if let addChdir = GlibcExtensions.addChdir {
      let chdirResult = addChdir(&actions, workingDirectory)
      guard chdirResult == 0 else {
        close(readFD)
        throw SpawnError("posix_spawn_file_actions_addchdir_np", chdirResult)
      }
    }

    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    // Own process group (so a kill reaches every descendant that stays in it), no blocked
    // signals, and default dispositions (the executor ignores SIGPIPE; the task must not).
    var noSignals = sigset_t()
    sigemptyset(&noSignals)
    var allSignals = sigset_t()
    sigfillset(&allSignals)
    posix_spawnattr_setsigmask(&attributes, &noSignals)
    posix_spawnattr_setsigdefault(&attributes, &allSignals)
    posix_spawnattr_setpgroup(&attributes, 0)
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

    let argv = arguments.map { strdup($0) } + [nil]
    let envp = environment.map { strdup($0) } + [nil]
    defer {
      for pointer in argv { free(pointer) }
      for pointer in envp { free(pointer) }
    }
    var pid: pid_t = 0
    // glibc's posix_spawn returns once the child has exec'd (CLONE_VFORK): while the lock is
    // held, no child exists that still has a copy of this process's descriptors.
    let result = withNoChildBeingSpawned {
      argv.withUnsafeBufferPointer { argvPointer in
        envp.withUnsafeBufferPointer { envpPointer in
          posix_spawn(&pid, executable, &actions, &attributes, argvPointer.baseAddress!, envpPointer.baseAddress!)
        }
      }
    }
    guard result == 0 else {
      close(readFD)
      throw SpawnError("posix_spawn \(executable)", result)
    }
    return ChildProcess(pid: pid, outputFD: readFD, tailCapacity: tailCapacity)
  }

  /// Held while a child is being spawned, and while a file that a child will execute is open
  /// for writing. A child spawned while such a descriptor is open holds a copy of it from its
  /// clone until its exec (close-on-exec or not), and an exec of the file in that instant fails
  /// with ETXTBSY ("Text file busy"): about 1 run in 800 with 8 runs at once on two busy cores.
  private static let spawnLock = NSLock()

  /// Runs `body` while no child is being spawned; spawns wait until it returns.
  static func withNoChildBeingSpawned<T>(_ body: () throws -> T) rethrows -> T {
    spawnLock.lock()
    defer { spawnLock.unlock() }
    return try body()
  }

  /// Makes sure this process's children stay waitable. With SIGCHLD ignored, or
  /// `SA_NOCLDWAIT` set (either can be inherited across `exec` from whatever started the
  /// executor), the kernel reaps children itself and their exit status is lost; the default
  /// disposition is restored then. Checked at every spawn: it costs one system call.
  static func makeChildrenWaitable() {
    var current = sigaction()
    guard sigaction(SIGCHLD, nil, &current) == 0 else { return }
    let ignored = unsafeBitCast(current.__sigaction_handler.sa_handler, to: Int.self) == unsafeBitCast(SIG_IGN, to: Int.self)
    guard ignored || current.sa_flags & Int32(SA_NOCLDWAIT) != 0 else { return }
    var restored = sigaction()
    restored.__sigaction_handler.sa_handler = SIG_DFL
    sigemptyset(&restored.sa_mask)
    restored.sa_flags = 0
    _ = sigaction(SIGCHLD, &restored, nil)
  }

  /// Sets `FD_CLOEXEC` on every open descriptor in `numbers`, as listed in `/proc/self/fd`.
  /// The executor passes everything above stderr; a test passes only descriptors of its own, as
  /// the flag is process-wide state that other threads' spawns depend on.
  static func markDescriptorsCloseOnExec(_ numbers: ClosedRange<Int32>) {
    guard let names = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") else { return }
    for name in names {
      guard let fd = Int32(name), numbers.contains(fd) else { continue }
      let flags = fcntl(fd, F_GETFD)
      if flags >= 0 && flags & FD_CLOEXEC == 0 { _ = fcntl(fd, F_SETFD, flags | FD_CLOEXEC) }
    }
  }

  /// Sends `signal` to the child's whole process group, unless the leader has exited (reaped,
  /// the id may no longer be ours; not yet reaped, it finished on its own, and the monitor kills
  /// what it left in its group). Returns whether it was sent.
  @discardableResult
  func signalGroup(_ signal: Int32) -> Bool {
    state.withLock { state in
      guard !state.reaped else { return false }
      // A leader that exited between two polls of the monitor is not counted as stopped: a
      // task that succeeded just before its timeout is a success, not a timeout to retry.
      var info = siginfo_t()
      if waitid(P_PID, id_t(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_signo == SIGCHLD { return false }
      state.signalled = true
      return kill(-pid, signal) == 0
    }
  }

  /// Waits, on a dedicated thread, for the leader to exit and the output pipe to reach EOF;
  /// kills what is left of the group once the leader is gone. Call once.
  func waitForTermination() async -> Termination {
    await withCheckedContinuation { (continuation: CheckedContinuation<Termination, Never>) in
      let thread = Thread { [self] in
        continuation.resume(returning: self.monitor())
      }
      thread.name = "hg-run-\(pid)"  // Linux keeps at most 15 bytes
      thread.start()
    }
  }

  /// The blocking loop: drain the pipe, poll for the leader's exit.
  private func monitor() -> Termination {
    var tail = OutputTail(capacity: tailCapacity)
    var buffer = [UInt8](repeating: 0, count: 64 * 1024)
    var rawStatus: Int32?
    var exited = false
    var signalled = false
    var endOfOutput = false
    var exitedAt: timespec?

    while true {
      if !endOfOutput {
        var descriptor = pollfd(fd: outputFD, events: Int16(POLLIN), revents: 0)
        let ready = poll(&descriptor, 1, 20)
        if ready > 0 {
          let count = buffer.withUnsafeMutableBytes { read(outputFD, $0.baseAddress, $0.count) }
          if count > 0 {
            buffer.withUnsafeBytes { tail.append(UnsafeRawBufferPointer(rebasing: $0[..<count])) }
          } else if count == 0 || (errno != EINTR && errno != EAGAIN) {
            endOfOutput = true
          }
        }
      } else if !exited {
        usleep(10_000)
      }

      if !exited {
        state.withLock { state in
          // Seen without reaping it (`WNOWAIT`): until it is reaped, the dead leader keeps its
          // pid, so the group id, ours, and the kill below cannot reach a process that reused it.
          var info = siginfo_t()
          let waited = waitid(P_PID, id_t(pid), &info, WEXITED | WNOHANG | WNOWAIT)
          if waited == 0 && info.si_signo == SIGCHLD {
            // Whatever the leader left behind in its group goes with it.
            kill(-pid, SIGKILL)
            var status: Int32 = 0
            rawStatus = waitpid(pid, &status, 0) == pid ? status : nil
            exited = true
          } else if waited < 0 && errno == ECHILD {
            // Reaped by someone else: the status is lost, and the pid may already be reused,
            // so the group is not signalled.
            exited = true
          }
          if exited {
            state.reaped = true
            signalled = state.signalled
          }
        }
        if exited {
          var now = timespec()
          clock_gettime(CLOCK_MONOTONIC, &now)
          exitedAt = now
        }
      }

      if exited {
        if endOfOutput { return finish(rawStatus, signalled, tail) }
        // A descendant that left the process group may hold the pipe open: stop reading after
        // two seconds rather than wait for it.
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        if let exitedAt, now.tv_sec - exitedAt.tv_sec >= 2 { return finish(rawStatus, signalled, tail) }
      }
    }
  }

  private func finish(_ rawStatus: Int32?, _ signalled: Bool, _ tail: OutputTail) -> Termination {
    close(outputFD)
    return Termination(rawStatus: rawStatus, wasSignalled: signalled, outputTail: tail.bytes)
  }
}

/// GNU extensions that Swift's Glibc module does not import (it is built without
/// `_GNU_SOURCE`), looked up in the C library at run time.
enum GlibcExtensions {
  typealias Pipe2 = @convention(c) (UnsafeMutablePointer<Int32>?, Int32) -> Int32
  typealias AddChdir = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>?, UnsafePointer<CChar>?) -> Int32
  typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>?, Int32) -> Int32

  /// `pipe2`, or `pipe` + `FD_CLOEXEC` where it is missing (not atomic then).
  static func pipe2(_ fds: UnsafeMutablePointer<Int32>, _ flags: Int32) -> Int32 {
    if let pipe2 = pipe2Function { return pipe2(fds, flags) }
    guard pipe(fds) == 0 else { return -1 }
    _ = fcntl(fds[0], F_SETFD, FD_CLOEXEC)
    _ = fcntl(fds[1], F_SETFD, FD_CLOEXEC)
    return 0
  }

  private static let pipe2Function: Pipe2? = lookup("pipe2")
  /// `posix_spawn_file_actions_addchdir_np` (glibc ≥ 2.29).
  static let addChdir: AddChdir? = lookup("posix_spawn_file_actions_addchdir_np")
  /// `posix_spawn_file_actions_addclosefrom_np` (glibc ≥ 2.34).
  static let addCloseFrom: AddCloseFrom? = lookup("posix_spawn_file_actions_addclosefrom_np")

  private static func lookup<Function>(_ name: String) -> Function? {
    guard let handle = dlopen(nil, RTLD_NOW), let symbol = dlsym(handle, name) else { return nil }
    return unsafeBitCast(symbol, to: Function.self)
  }
}

/// A system call that failed while starting a child.
struct SpawnError: Error, CustomStringConvertible {
  var call: String
  var code: Int32

  init(_ call: String, _ code: Int32) {
    self.call = call
    self.code = code
  }

  var description: String { "\(call) failed: \(String(cString: strerror(code)))" }
}
