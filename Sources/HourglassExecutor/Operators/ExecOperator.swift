import Crypto
import Foundation

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// The `exec` operator: runs the task's blob as a program, in a private temporary directory,
/// with an empty environment (but for the run's identity), resource limits,
/// in its own process group, capturing the tail of its output.
///
/// What it isolates, and what it does not, is in `docs/executor.md`: there are no namespaces
/// and no seccomp filter. The task runs as the executor's user, or with ``Configuration/runAs``
/// as another one (the executor must then be root).
public struct ExecOperator: Operator {
  /// Limits and places for `exec` runs.
  public struct Configuration: Sendable, Hashable {
    /// Where per-run temporary directories are made.
    public var temporaryRoot: String
    /// RLIMIT_NOFILE for the task (soft and hard).
    public var openFileLimit: Int
    /// RLIMIT_AS in bytes; `nil` leaves the executor's own limit.
    public var addressSpaceLimitBytes: Int?
    /// RLIMIT_CPU in seconds; `nil` leaves the executor's own limit.
    public var cpuTimeLimitSeconds: Int?
    /// Bytes of output kept (the last ones).
    public var outputTailLimit: Int
    /// How long a stopped task has between SIGTERM and SIGKILL.
    public var killGrace: Duration
    /// The shell that applies the limits, then `exec`s the blob.
    public var shell: String
    /// The task's `PATH`; nil (the default) sets none, as the environment holds only the run's
    /// identity. Without one, a shell script's shell searches its own built-in default
    /// (dash: `/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`) and
    /// `#!/usr/bin/env` the C library's (`/bin:/usr/bin`).
    public var path: String?
    /// The user tasks run as, instead of the executor's own: the executor must run as root,
    /// and starts each task through ``privilegeTool`` with that user's ids, no supplementary
    /// groups and `no_new_privs` (no set-user-id program can give a task more). The run's
    /// directory and program are given to that user. nil runs tasks as the executor's user.
    public var runAs: RunAs?
    /// util-linux's `setpriv`, which drops to ``runAs`` between the spawn and the task.
    public var privilegeTool: String = "/usr/bin/setpriv"

    /// /tmp, 1024 files, no address-space or CPU limit, 64 KiB of output, 5 s kill grace, no `PATH`.
    public static var defaults: Configuration {
      Configuration(
        temporaryRoot: "/tmp", openFileLimit: 1024, addressSpaceLimitBytes: nil, cpuTimeLimitSeconds: nil,
        outputTailLimit: 64 * 1024, killGrace: .seconds(5), shell: "/bin/sh", path: nil)
    }

    /// Creates a configuration.
    public init(
      temporaryRoot: String, openFileLimit: Int, addressSpaceLimitBytes: Int?, cpuTimeLimitSeconds: Int?,
      outputTailLimit: Int, killGrace: Duration, shell: String, path: String? = nil
    ) {
      self.temporaryRoot = temporaryRoot
      self.openFileLimit = openFileLimit
      self.addressSpaceLimitBytes = addressSpaceLimitBytes
      self.cpuTimeLimitSeconds = cpuTimeLimitSeconds
      self.outputTailLimit = outputTailLimit
      self.killGrace = killGrace
      self.shell = shell
      self.path = path
    }
  }

  /// A user to run tasks as: its ids, looked up once.
  public struct RunAs: Sendable, Hashable, CustomStringConvertible {
    /// The user's name, for messages.
    public var name: String
    /// Its user id.
    public var uid: UInt32
    /// Its primary group id.
    public var gid: UInt32

    /// A user by ids.
    public init(name: String, uid: UInt32, gid: UInt32) {
      self.name = name
      self.uid = uid
      self.gid = gid
    }

    /// The user called `name` in the password database, or nil when there is none.
    public static func user(named name: String) -> RunAs? {
      var entry = passwd()
      var result: UnsafeMutablePointer<passwd>?
      var buffer = [CChar](repeating: 0, count: 16_384)
      guard getpwnam_r(name, &entry, &buffer, buffer.count, &result) == 0, result != nil else { return nil }
      return RunAs(name: name, uid: UInt32(entry.pw_uid), gid: UInt32(entry.pw_gid))
    }

    public var description: String { "\(name) (uid \(uid), gid \(gid))" }
  }

  /// The exit code reported for a run that never started (bad digest, spawn failure).
  public static let notStartedExitCode: Int32 = -1

  /// The configuration.
  public let configuration: Configuration

  /// `exec`.
  public var name: String { "exec" }

  /// Creates the operator.
  public init(configuration: Configuration = .defaults) {
    self.configuration = configuration
  }

  public func run(_ request: RunRequest, cancellation: RunCancellation) async -> RunOutcome {
    let started = Date()
    func failed(_ error: String) -> RunOutcome {
      RunOutcome(status: .failed, exitCode: Self.notStartedExitCode, error: error, started: started, finished: Date())
    }

    let digest = Self.digest(of: request.blob)
    guard digest == request.blobSHA256.lowercased() else {
      return failed("the blob's SHA-256 is \(digest), not the expected \(request.blobSHA256); not run")
    }
    if let reason = cancellation.reason {
      return RunOutcome(status: reason.outcomeStatus, exitCode: Self.notStartedExitCode, error: reason.description, started: started, finished: Date())
    }

    let directory: String
    do {
      directory = try Self.makePrivateDirectory(in: configuration.temporaryRoot)
    } catch {
      return failed("cannot create the run's temporary directory: \(error)")
    }
    let outcome = await run(request, in: directory, cancellation: cancellation, started: started)
    // On a thread of its own: a tree of many files takes a while to remove, and the cooperative
    // pool also carries the executor's renewals.
    await Self.onThreadOfItsOwn(named: "hg-cleanup") { Self.removeRunDirectory(directory) }
    return outcome
  }

  /// Runs `body` (blocking file-system work) on a new thread named `name` (Linux keeps at most 15
  /// bytes of it) and returns its result, leaving the cooperative pool free meanwhile.
  static func onThreadOfItsOwn<T: Sendable>(named name: String, _ body: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { (continuation: CheckedContinuation<T, Never>) in
      let thread = Thread { continuation.resume(returning: body()) }
      thread.name = name
      thread.start()
    }
  }

  /// The run proper, in its private `directory`.
  private func run(_ request: RunRequest, in directory: String, cancellation: RunCancellation, started: Date) async -> RunOutcome {
    func failed(_ error: String) -> RunOutcome {
      RunOutcome(status: .failed, exitCode: Self.notStartedExitCode, error: error, started: started, finished: Date())
    }
    let program = directory + "/task"
    do {
      try Self.writePrivateExecutable(request.blob, to: program)
      if let user = configuration.runAs {
        // Both stay private (0700), to that user instead of the executor's.
        for path in [program, directory] where chown(path, uid_t(user.uid), gid_t(user.gid)) != 0 {
          throw SpawnError("chown \(path) to \(user)", errno)
        }
      }
    } catch {
      return failed("cannot write the blob: \(error)")
    }

    let child: ChildProcess
    do {
      let command = [configuration.shell, "-c", limitsPrelude(), directory] + request.arguments
      child = try ChildProcess.spawn(
        executable: configuration.runAs == nil ? configuration.shell : configuration.privilegeTool,
        arguments: privilegePrefix() + command,
        environment: environment(for: request),
        workingDirectory: directory,
        tailCapacity: configuration.outputTailLimit
      )
    } catch {
      return failed("cannot start the task: \(error)")
    }

    let killGrace = configuration.killGrace
    let termination = await withTaskGroup(of: ChildProcess.Termination?.self) { group in
      group.addTask { await child.waitForTermination() }
      group.addTask {
        // Fires on a stop request, or (reason nil) when this task is cancelled: either way the
        // group is stopped. After the leader is reaped the signals are no-ops.
        _ = await cancellation.wait()
        child.signalGroup(SIGTERM)
        try? await Task.sleep(for: killGrace)
        child.signalGroup(SIGKILL)
        return nil
      }
      var result: ChildProcess.Termination?
      while let next = await group.next() {
        if let next {
          result = next
          group.cancelAll()
        }
      }
      return result!
    }

    let finished = Date()
    if termination.wasSignalled {
      let reason = cancellation.reason
      return RunOutcome(
        status: reason?.outcomeStatus ?? .cancelled,
        exitCode: termination.exitCode ?? Self.notStartedExitCode,
        error: reason?.description ?? "the executor stopped the run",
        outputTail: termination.outputTail,
        started: started,
        finished: finished
      )
    }
    guard let exitCode = termination.exitCode else {
      // Never taken for success: nothing says the task succeeded.
      return RunOutcome(
        status: .failed, exitCode: Self.notStartedExitCode,
        error: "the task's exit status is unknown: something else in the executor's process reaped it",
        outputTail: termination.outputTail, started: started, finished: finished)
    }
    if exitCode == 0 {
      return RunOutcome(status: .succeeded, exitCode: 0, outputTail: termination.outputTail, started: started, finished: finished)
    }
    let error = termination.terminatingSignal.map { "killed by signal \($0)" } ?? "exited with status \(exitCode)"
    return RunOutcome(status: .failed, exitCode: exitCode, error: error, outputTail: termination.outputTail, started: started, finished: finished)
  }

  /// The lowercase hex SHA-256 of `blob`, as a lease's `blob_sha256` carries it.
  public static func digest(of blob: [UInt8]) -> String {
    let hex: [UInt8] = Array("0123456789abcdef".utf8)
    var text: [UInt8] = []
    text.reserveCapacity(64)
    for byte in SHA256.hash(data: blob) {
      text.append(hex[Int(byte >> 4)])
      text.append(hex[Int(byte & 0x0f)])
    }
    return String(decoding: text, as: UTF8.self)
  }

  /// The shell prelude that applies the resource limits in the child, then replaces itself
  /// with the task (`$0` is the run's directory, the rest the task's arguments).
  /// The `cd` repeats the spawn's own change of directory, for C libraries without
  /// `posix_spawn_file_actions_addchdir_np`.
  ///
  /// The task starts through `env -i` with exactly ``environment(for:)``'s variables: a shell
  /// exports variables of its own to what it `exec`s (dash `PWD`; bash also `SHLVL` and `_`,
  /// which no `unset` removes), and the task's environment is ours alone, whatever the shell.
  func limitsPrelude() -> String {
    var limits = ["cd \"$0\"", "ulimit -c 0", "ulimit -n \(configuration.openFileLimit)"]
    if let bytes = configuration.addressSpaceLimitBytes { limits.append("ulimit -v \(max(1, bytes / 1024))") }
    if let seconds = configuration.cpuTimeLimitSeconds { limits.append("ulimit -t \(seconds)") }
    let variables = Self.environmentNames(includingPath: configuration.path != nil).map { "\"\($0)=$\($0)\"" }
    // `./task` rather than `$1`: env would take a program path with an `=` in it (a temporary
    // root such as /tmp/a=b) for one more variable. The working directory is the run's.
    return limits.joined(separator: " && ") + " || exit 125; exec \(Self.envTool) -i \(variables.joined(separator: " ")) ./task \"$@\""
  }

  /// coreutils' `env`, which starts the task with nothing but the variables it is given.
  static let envTool = "/usr/bin/env"

  /// The names of the variables the task gets, in order.
  static func environmentNames(includingPath: Bool) -> [String] {
    ["HOURGLASS_RUN_ID", "HOURGLASS_TASK_ID", "HOURGLASS_SCHEDULED_AT", "HOURGLASS_ATTEMPT"] + (includingPath ? ["PATH"] : [])
  }

  /// What goes before the shell's command line: with ``Configuration/runAs``, `setpriv`'s
  /// arguments that become that user for good (real and effective ids, no supplementary
  /// groups, no way back through a set-user-id program).
  func privilegePrefix() -> [String] {
    guard let user = configuration.runAs else { return [] }
    return [
      configuration.privilegeTool, "--reuid=\(user.uid)", "--regid=\(user.gid)", "--clear-groups", "--no-new-privs", "--",
    ]
  }

  /// The task's whole environment (in the order of ``environmentNames(includingPath:)``).
  func environment(for request: RunRequest) -> [String] {
    [
      "HOURGLASS_RUN_ID=\(request.runID)",
      "HOURGLASS_TASK_ID=\(request.taskID)",
      "HOURGLASS_SCHEDULED_AT=\(RFC3339.format(request.scheduledAt))",
      "HOURGLASS_ATTEMPT=\(request.attempt)",
    ] + (configuration.path.map { ["PATH=\($0)"] } ?? [])
  }

  /// Removes a run's directory, whatever the task left in it. Every step goes through a
  /// descriptor opened with `O_NOFOLLOW` relative to its parent's, never through a path: a
  /// process the task left behind cannot swap a directory for a symbolic link and make the
  /// executor (perhaps root, with ``Configuration/runAs``) change or remove anything outside the
  /// run's directory. Each directory is made its owner's (0700) before it is read, so a tree the
  /// task made unreadable or unwritable goes too when the executor is not root.
  ///
  /// A tree deeper than ``removalDepthLimit`` is removed in passes: whatever lies at the limit
  /// is moved (by `renameat` between the descriptors at hand) up into the run's directory, so
  /// each pass takes the tree that many levels shallower, until a pass has nothing left to move.
  static func removeRunDirectory(_ directory: String) {
    let slash = directory.lastIndex(of: "/") ?? directory.startIndex
    let parentPath = slash == directory.startIndex ? "/" : String(directory[..<slash])
    let name = Array(String(directory[directory.index(after: slash)...]).utf8CString)
    let parent = open(parentPath, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    guard parent >= 0 else { return }
    defer { close(parent) }
    name.withUnsafeBufferPointer { name in
      var removal = Removal()
      // Bounded, against a process the task left behind that keeps making directories.
      for _ in 0..<removalPassLimit {
        removal.moved = 0
        removeTree(named: name.baseAddress!, in: parent, depth: 0, removal: &removal)
        if removal.moved == 0 { break }
      }
    }
  }

  /// The deepest level ``removeRunDirectory(_:)`` goes into in one pass (each level holds a
  /// descriptor); what lies deeper is moved up for the next pass.
  static let removalDepthLimit = 256

  /// The most passes of one removal: a tree up to about a million levels deep.
  static let removalPassLimit = 4_096

  /// One removal's state across its passes.
  private struct Removal {
    /// The run's directory, open, during a pass (what lies at the depth limit moves into it).
    var top: Int32 = -1
    /// Entries moved up during the current pass.
    var moved = 0
  }

  /// Linux's `O_PATH` (a descriptor that names an inode without opening it for reading), which
  /// Swift's Glibc module does not import.
  private static let openPathOnly: Int32 = 0o10000000

  /// Removes `name` in the directory open as `parent`: unlinks it, or, if it is a directory
  /// (not a link to one), empties it first.
  private static func removeTree(named name: UnsafePointer<CChar>, in parent: Int32, depth: Int, removal: inout Removal) {
    var fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
    if fd < 0 && errno == EACCES {
      // A directory the task made unreadable: made the owner's again through a descriptor of
      // that very directory (chmod by its /proc link), never by a name that could be swapped.
      let handle = openat(parent, name, openPathOnly | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
      if handle >= 0 {
        _ = chmod("/proc/self/fd/\(handle)", 0o700)
        close(handle)
      }
      fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
    }
    guard fd >= 0 else {
      // Not a directory: a file, a symbolic link (removed, never followed), …
      _ = unlinkat(parent, name, 0)
      return
    }
    empty(fd, depth: depth, removal: &removal)
    _ = unlinkat(parent, name, AT_REMOVEDIR)
  }

  /// Removes everything in the directory open as `fd` (at the depth limit: moves it up into the
  /// run's directory), then closes it.
  private static func empty(_ fd: Int32, depth: Int, removal: inout Removal) {
    _ = fchmod(fd, 0o700)
    guard let listing = fdopendir(fd) else {
      close(fd)
      return
    }
    defer { closedir(listing) }  // closes fd too
    if depth == 0 { removal.top = dirfd(listing) }
    defer { if depth == 0 { removal.top = -1 } }
    var names: [[CChar]] = []
    while let entry = readdir(listing) {
      let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
        raw.prefix { $0 != 0 }.map { CChar(bitPattern: $0) } + [0]
      }
      if name != [46, 0] && name != [46, 46, 0] { names.append(name) }
    }
    for name in names {
      if depth + 1 < removalDepthLimit {
        name.withUnsafeBufferPointer { removeTree(named: $0.baseAddress!, in: dirfd(listing), depth: depth + 1, removal: &removal) }
      } else if name.withUnsafeBufferPointer({ unlinkat(dirfd(listing), $0.baseAddress!, 0) }) != 0,
        moveUp(name, from: dirfd(listing), removal: &removal)
      {
        // A directory at the depth limit (anything else was unlinked where it was).
        removal.moved += 1
      }
    }
  }

  /// Moves the directory `name` from the directory open as `directory` into the run's
  /// directory, under a new random name the task cannot have guessed; false if it could not be
  /// moved. A rename replaces an empty directory of the same name, which is as good (everything
  /// there goes); another name is tried past anything else in the way.
  private static func moveUp(_ name: [CChar], from directory: Int32, removal: inout Removal) -> Bool {
    for _ in 0..<8 {
      let target = ".hourglass-deep-\(String(UInt64.random(in: 0...UInt64.max), radix: 16))"
      let renamed = name.withUnsafeBufferPointer { name in renameat(directory, name.baseAddress!, removal.top, target) == 0 }
      if renamed { return true }
      guard [ENOTEMPTY, EEXIST, ENOTDIR, EISDIR].contains(errno) else { return false }
    }
    return false
  }

  /// Makes `root/hourglass-run-XXXXXX`, mode 0700.
  static func makePrivateDirectory(in root: String) throws -> String {
    var template = Array((root + "/hourglass-run-XXXXXX").utf8CString)
    let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
    guard made != nil else { throw SpawnError("mkdtemp in \(root)", errno) }
    let path = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    guard chmod(path, 0o700) == 0 else { throw SpawnError("chmod \(path)", errno) }
    return path
  }

  /// Writes `bytes` to a new file at `path`, mode 0700, refusing to follow or reuse anything.
  /// No child is spawned while the file is open for writing: one would hold the descriptor for
  /// an instant, and the task's exec would fail with ETXTBSY.
  static func writePrivateExecutable(_ bytes: [UInt8], to path: String) throws {
    try ChildProcess.withNoChildBeingSpawned {
      let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o700)
      guard fd >= 0 else { throw SpawnError("open \(path)", errno) }
      defer { close(fd) }
      var written = 0
      while written < bytes.count {
        let count = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + written, $0.count - written) }
        if count < 0 {
          if errno == EINTR { continue }
          throw SpawnError("write \(path)", errno)
        }
        written += count
      }
      guard fchmod(fd, 0o700) == 0 else { throw SpawnError("fchmod \(path)", errno) }
    }
  }
}

/// RFC 3339 timestamps in UTC, as the task's environment carries them.
enum RFC3339 {
  /// `2026-03-29T01:30:00Z`, with microseconds when the instant has a fraction.
  static func format(_ date: Date) -> String {
    // Within years 1 to 9999 (where the lease's time is clamped already): no conversion below
    // can overflow.
    let interval = min(max(date.timeIntervalSince1970, -62_135_596_800), 253_402_300_799.999)
    var seconds = time_t(interval.rounded(.down))
    var micros = Int(((interval - Double(seconds)) * 1_000_000).rounded())
    if micros >= 1_000_000 {
      seconds += 1
      micros -= 1_000_000
    }
    var parts = tm()
    gmtime_r(&seconds, &parts)
    func pad(_ value: Int32, _ width: Int) -> String {
      let text = String(value)
      return String(repeating: "0", count: max(0, width - text.count)) + text
    }
    var text = "\(pad(parts.tm_year + 1900, 4))-\(pad(parts.tm_mon + 1, 2))-\(pad(parts.tm_mday, 2))"
    text += "T\(pad(parts.tm_hour, 2)):\(pad(parts.tm_min, 2)):\(pad(parts.tm_sec, 2))"
    if micros != 0 { text += "." + pad(Int32(micros), 6) }
    return text + "Z"
  }
}
