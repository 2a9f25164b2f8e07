import Foundation
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// How a ``TestProcess`` ended.
public enum TestProcessExit: Equatable, Sendable, CustomStringConvertible {
  /// It exited with this status.
  case exited(Int32)
  /// A signal ended it.
  case signalled(Int32)
  /// Something else in the test process reaped it first: the status is lost.
  case unknown

  public var description: String {
    switch self {
    case .exited(let status): "exited with \(status)"
    case .signalled(let signal): "ended by signal \(signal)"
    case .unknown: "ended with an unknown status"
    }
  }
}

/// A child process for tests, started with `posix_spawn`.
///
/// Built for a test run where dozens of tests start children at once, on a machine whose
/// cooperative thread pool may be two threads wide:
/// - the child inherits its three standard streams and nothing else (no pipe of another test's
///   child, which would keep that pipe open after its own child died);
/// - every blocking wait (for output, for the exit) happens on a thread of its own, never on the
///   cooperative pool that the tests' tasks need to make progress;
/// - its exit is learnt from `waitpid` on its pid alone, not through a helper thread shared by
///   every child of the process (Foundation's `Process` has one, and a child that inherited
///   another's notification socket, or lost it, stalls every test waiting for any child).
public final class TestProcess: Sendable {
  /// Where the child's standard input comes from.
  public enum Input: Sendable {
    /// `/dev/null`.
    case null
    /// A pipe whose write end this process holds until ``closeInput()``: a child started with
    /// `HOURGLASS_EXIT_ON_STDIN_EOF=1` exits when it closes, or when the test process dies.
    case lifeline
    /// These bytes, then end of file.
    case bytes([UInt8])
  }

  /// Where the child's standard error goes.
  public enum ErrorOutput: Sendable {
    /// Into ``output``, with standard output.
    case merged
    /// Into ``errorOutput``.
    case separate
    /// To `/dev/null`.
    case discarded
  }

  private struct State {
    var output: [UInt8] = []
    var errorOutput: [UInt8] = []
    var openStreams: Int
    var exit: TestProcessExit?
    var outputWaiters: [(predicate: @Sendable (String) -> Bool, continuation: CheckedContinuation<Bool, Never>)] = []
    var endWaiters: [CheckedContinuation<Void, Never>] = []
    var exitWaiters: [CheckedContinuation<TestProcessExit, Never>] = []
  }

  /// The child's process id.
  public let pid: pid_t
  private let state: Mutex<State>
  /// The write end of a ``Input/lifeline`` pipe while it is open.
  private let inputEnd: Mutex<Int32?>

  private init(pid: pid_t, openStreams: Int, inputEnd: Int32?) {
    self.pid = pid
    self.state = Mutex(State(openStreams: openStreams))
    self.inputEnd = Mutex(inputEnd)
  }

  /// Starts `executable` with `arguments` (`argv[0]` is the executable's path), with
  /// `environment` (nil: this process's), in `directory` (nil: this process's).
  ///
  /// A child still running after `lifetimeLimit` is killed (and says so on this process's
  /// standard error): that ends every wait for its output or its exit, so a child that hangs
  /// fails its test instead of holding the whole test run.
  public static func start(
    _ executable: String, arguments: [String], environment: [String: String]? = nil, directory: String? = nil,
    input: Input = .null, errorOutput: ErrorOutput = .merged, lifetimeLimit: Duration = .seconds(300)
  ) throws -> TestProcess {
    var opened: [Int32] = []
    func makePipe() throws -> (read: Int32, write: Int32) {
      var ends: [Int32] = [-1, -1]
      guard SpawnExtensions.pipe2(&ends, O_CLOEXEC) == 0 else { throw TestProcessError("pipe2", errno) }
      opened += ends
      return (ends[0], ends[1])
    }
    defer { for fd in opened { close(fd) } }

    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    var inputPipe: (read: Int32, write: Int32)?
    switch input {
    case .null:
      posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    case .lifeline, .bytes:
      let pipe = try makePipe()
      inputPipe = pipe
      posix_spawn_file_actions_adddup2(&actions, pipe.read, 0)
    }
    let outputPipe = try makePipe()
    posix_spawn_file_actions_adddup2(&actions, outputPipe.write, 1)
    var errorPipe: (read: Int32, write: Int32)?
    switch errorOutput {
    case .merged:
      posix_spawn_file_actions_adddup2(&actions, outputPipe.write, 2)
    case .separate:
      let pipe = try makePipe()
      errorPipe = pipe
      posix_spawn_file_actions_adddup2(&actions, pipe.write, 2)
    case .discarded:
      posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
    }
    // Whatever else is open here (other tests' pipes and sockets) stays here, even the
    // descriptors someone opened without O_CLOEXEC.
    if let closeFrom = SpawnExtensions.addCloseFrom { _ = closeFrom(&actions, 3) }
    if let directory {
      guard let addChdir = SpawnExtensions.addChdir else { throw TestProcessError("posix_spawn_file_actions_addchdir_np", ENOSYS) }
      let result = addChdir(&actions, directory)
      guard result == 0 else { throw TestProcessError("posix_spawn_file_actions_addchdir_np", result) }
    }

    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    // Its own process group (as Foundation's `Process` did), no blocked signals, and default
    // dispositions (whatever this process ignores, the child must not inherit).
    var noSignals = sigset_t()
    sigemptyset(&noSignals)
    var allSignals = sigset_t()
    sigfillset(&allSignals)
    posix_spawnattr_setsigmask(&attributes, &noSignals)
    posix_spawnattr_setsigdefault(&attributes, &allSignals)
    posix_spawnattr_setpgroup(&attributes, 0)
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

    let environment = (environment ?? ProcessInfo.processInfo.environment).map { "\($0.key)=\($0.value)" }
    let argv = ([executable] + arguments).map { strdup($0) } + [nil]
    let envp = environment.map { strdup($0) } + [nil]
    defer {
      for pointer in argv { free(pointer) }
      for pointer in envp { free(pointer) }
    }
    var pid: pid_t = 0
    let result = posix_spawn(&pid, executable, &actions, &attributes, argv, envp)
    guard result == 0 else { throw TestProcessError("posix_spawn \(executable)", result) }

    // The child has its copies; this process keeps only the ends it reads or writes.
    var kept: Set<Int32> = [outputPipe.read]
    if let errorPipe { kept.insert(errorPipe.read) }
    if let inputPipe { kept.insert(inputPipe.write) }
    opened.removeAll { kept.contains($0) }

    var lifelineEnd: Int32?
    if case .lifeline = input { lifelineEnd = inputPipe?.write }
    let child = TestProcess(pid: pid, openStreams: errorPipe == nil ? 1 : 2, inputEnd: lifelineEnd)
    child.onThread("tp-reap-\(pid)") { child.reap() }
    child.onThread("tp-out-\(pid)") { child.drain(outputPipe.read, isError: false) }
    if let errorPipe { child.onThread("tp-err-\(pid)") { child.drain(errorPipe.read, isError: true) } }
    if case .bytes(let bytes) = input, let end = inputPipe?.write {
      child.onThread("tp-in-\(pid)") { Self.feed(bytes, to: end) }
    }
    let (seconds, attoseconds) = lifetimeLimit.components
    let limitNanoseconds = Int(seconds) * 1_000_000_000 + Int(attoseconds / 1_000_000_000)
    DispatchQueue.global().asyncAfter(deadline: .now() + .nanoseconds(limitNanoseconds)) {
      child.killIfRunning(reason: "\(executable) (pid \(child.pid)) still running after \(lifetimeLimit): killed")
    }
    return child
  }

  /// Runs `executable` to its end: its exit, standard output and standard error.
  public static func run(
    _ executable: String, arguments: [String], environment: [String: String]? = nil, directory: String? = nil,
    input: Input = .null
  ) async throws -> (exit: TestProcessExit, output: String, errorOutput: String) {
    let child = try start(executable, arguments: arguments, environment: environment, directory: directory, input: input, errorOutput: .separate)
    let exit = await child.exit()
    await child.waitForOutputEnd()
    return (exit, child.output, child.errorOutput)
  }

  // MARK: Output

  /// What the child has written so far to its standard output (and error, when merged).
  public var output: String { state.withLock { String(decoding: $0.output, as: UTF8.self) } }

  /// What the child has written so far to its standard error, when ``ErrorOutput/separate``.
  public var errorOutput: String { state.withLock { String(decoding: $0.errorOutput, as: UTF8.self) } }

  /// Waits until ``output`` satisfies `predicate` (true), or until the output ends without it
  /// (false).
  public func waitForOutput(where predicate: @escaping @Sendable (String) -> Bool) async -> Bool {
    await withCheckedContinuation { continuation in
      let now: Bool? = state.withLock { state in
        if predicate(String(decoding: state.output, as: UTF8.self)) { return true }
        if state.openStreams == 0 { return false }
        state.outputWaiters.append((predicate, continuation))
        return nil
      }
      if let now { continuation.resume(returning: now) }
    }
  }

  /// Waits until the child has printed `text` (true), or until its output ends first (false).
  public func waitForOutput(containing text: String) async -> Bool {
    await waitForOutput { $0.contains(text) }
  }

  /// Waits until every output stream of the child has reached end of file.
  public func waitForOutputEnd() async {
    await withCheckedContinuation { continuation in
      let ended = state.withLock { state in
        if state.openStreams == 0 { return true }
        state.endWaiters.append(continuation)
        return false
      }
      if ended { continuation.resume() }
    }
  }

  // MARK: Input

  /// Closes this process's end of a ``Input/lifeline`` pipe, as the kernel does when the test
  /// process dies.
  public func closeInput() {
    if let fd = inputEnd.withLock({ end -> Int32? in
      defer { end = nil }
      return end
    }) {
      close(fd)
    }
  }

  // MARK: Lifetime

  /// Whether the child has exited and been reaped.
  public var hasExited: Bool { state.withLock { $0.exit != nil } }

  /// Sends `signal` to the child unless it has been reaped (its pid may belong to another
  /// process by then).
  public func signal(_ signal: Int32) {
    state.withLock { state in
      if state.exit == nil { _ = Glibc.kill(pid, signal) }
    }
  }

  /// SIGKILL; returns at once (``exit()`` waits for it to take effect).
  public func kill() { signal(SIGKILL) }

  /// SIGKILL with a line on standard error saying why, unless the child has been reaped.
  private func killIfRunning(reason: String) {
    let killed = state.withLock { state -> Bool in
      guard state.exit == nil else { return false }
      _ = Glibc.kill(pid, SIGKILL)
      return true
    }
    if killed { FileHandle.standardError.write(Data("TestProcess: \(reason)\n".utf8)) }
  }

  /// SIGTERM (a graceful shutdown), then how the child ended.
  public func terminate() async -> TestProcessExit {
    signal(SIGTERM)
    return await exit()
  }

  /// How the child ended, once it has.
  public func exit() async -> TestProcessExit {
    await withCheckedContinuation { continuation in
      let exit = state.withLock { state -> TestProcessExit? in
        if let exit = state.exit { return exit }
        state.exitWaiters.append(continuation)
        return nil
      }
      if let exit { continuation.resume(returning: exit) }
    }
  }

  // MARK: Threads

  /// Runs `body` on a new thread named `name` (at most 15 bytes: Linux's limit, beyond which
  /// the name is not set).
  private func onThread(_ name: String, _ body: @escaping @Sendable () -> Void) {
    let thread = Thread(block: body)
    thread.name = name
    thread.start()
  }

  /// Waits for the child's exit and records it. The child is seen dead without being reaped
  /// (`WNOWAIT`), then reaped under the lock ``signal(_:)`` takes, so a signal never reaches a
  /// process that reused its pid. A lifeline still open is closed then.
  private func reap() {
    var info = siginfo_t()
    while waitid(P_PID, id_t(pid), &info, WEXITED | WNOWAIT) < 0 && errno == EINTR {}
    let waiters = state.withLock { state in
      var status: Int32 = 0
      var waited: pid_t
      repeat { waited = waitpid(pid, &status, 0) } while waited < 0 && errno == EINTR
      let exit: TestProcessExit
      if waited != pid {
        exit = .unknown
      } else if status & 0x7f == 0 {
        exit = .exited((status >> 8) & 0xff)
      } else {
        exit = .signalled(status & 0x7f)
      }
      state.exit = exit
      defer { state.exitWaiters = [] }
      return state.exitWaiters.map { ($0, exit) }
    }
    closeInput()
    for (waiter, exit) in waiters { waiter.resume(returning: exit) }
  }

  /// Reads `fd` to its end into the output (or error output).
  private func drain(_ fd: Int32, isError: Bool) {
    var buffer = [UInt8](repeating: 0, count: 64 * 1024)
    while true {
      let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
      if count < 0 && errno == EINTR { continue }
      let chunk = count > 0 ? Array(buffer[..<count]) : []
      let (satisfied, ended) = state.withLock { state -> ([(CheckedContinuation<Bool, Never>, Bool)], [CheckedContinuation<Void, Never>]) in
        if isError { state.errorOutput += chunk } else { state.output += chunk }
        if count <= 0 { state.openStreams -= 1 }
        // Decoded only when someone waits: a chatty child's output is not decoded per chunk.
        let text = state.outputWaiters.isEmpty ? "" : String(decoding: state.output, as: UTF8.self)
        var satisfied: [(CheckedContinuation<Bool, Never>, Bool)] = []
        state.outputWaiters.removeAll { waiter in
          if waiter.predicate(text) {
            satisfied.append((waiter.continuation, true))
            return true
          }
          guard state.openStreams == 0 else { return false }
          satisfied.append((waiter.continuation, false))
          return true
        }
        guard state.openStreams == 0 else { return (satisfied, []) }
        defer { state.endWaiters = [] }
        return (satisfied, state.endWaiters)
      }
      for (continuation, found) in satisfied { continuation.resume(returning: found) }
      for continuation in ended { continuation.resume() }
      if count <= 0 {
        close(fd)
        return
      }
    }
  }

  /// Writes `bytes` to `fd`, then closes it. SIGPIPE is blocked on this thread: a child that
  /// exits without reading makes the write fail, not this process.
  private static func feed(_ bytes: [UInt8], to fd: Int32) {
    var blocked = sigset_t()
    sigemptyset(&blocked)
    sigaddset(&blocked, SIGPIPE)
    pthread_sigmask(SIG_BLOCK, &blocked, nil)
    var offset = 0
    while offset < bytes.count {
      let written = bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
      if written < 0 && errno == EINTR { continue }
      if written <= 0 { break }
      offset += written
    }
    close(fd)
  }
}

/// A system call that failed while starting a ``TestProcess``.
public struct TestProcessError: Error, CustomStringConvertible {
  public var description: String

  init(_ call: String, _ code: Int32) {
    description = "\(call) failed: \(String(cString: strerror(code)))"
  }
}

/// GNU extensions that Swift's Glibc module does not import, found by name.
private enum SpawnExtensions {
  typealias Pipe2 = @convention(c) (UnsafeMutablePointer<Int32>?, Int32) -> Int32
  typealias AddChdir = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>?, UnsafePointer<CChar>?) -> Int32
  typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>?, Int32) -> Int32

  /// `pipe2`: both ends close-on-exec from the start, so no child spawned meanwhile by another
  /// thread (with a spawn that does not close what it inherits) holds one.
  static let pipe2: Pipe2 = lookup("pipe2")!
  /// `posix_spawn_file_actions_addchdir_np` (glibc ≥ 2.29).
  static let addChdir: AddChdir? = lookup("posix_spawn_file_actions_addchdir_np")
  /// `posix_spawn_file_actions_addclosefrom_np` (glibc ≥ 2.34).
  static let addCloseFrom: AddCloseFrom? = lookup("posix_spawn_file_actions_addclosefrom_np")

  private static func lookup<Function>(_ name: String) -> Function? {
    guard let symbol = dlsym(nil, name) else { return nil }
    return unsafeBitCast(symbol, to: Function.self)
  }
}
