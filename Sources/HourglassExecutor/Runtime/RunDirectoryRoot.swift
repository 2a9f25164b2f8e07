import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// An executor's own directory for its runs' directories, `<temporary directory>/hourglass-<id>`,
/// held for the executor's life by an exclusive lock on `<temporary directory>/hourglass-<id>.lock`.
///
/// A run's directory is removed when its run ends; one an executor left when it died (killed,
/// or its machine lost power) is removed by the next executor of that id to start here, which
/// finds the lock free. The lock is what makes that sweep safe: it never touches the directories
/// of a live executor, in this process or another, since two executors of one id cannot hold
/// the lock together (a second one is refused at start). The kernel drops the lock with its
/// holder, however that ends.
final class RunDirectoryRoot: Sendable {
  /// The directory the `exec` operator makes its run directories in.
  let path: String
  private let lock: Int32

  /// Claims the root of executor `executorID` under `temporaryDirectory` (an absolute path):
  /// takes its lock, makes the directory (mode 0711: a `runAs` user reaches its own run's
  /// directory through it, and lists nothing). ``sweepLeftovers()`` then removes whatever an
  /// earlier executor left in it.
  ///
  /// - Throws: ``ExecutorConfigurationError`` when another executor holds the lock, or the
  ///   directory or lock cannot be made.
  init(temporaryDirectory: String, executorID: String) throws(ExecutorConfigurationError) {
    let base = (temporaryDirectory.hasSuffix("/") && temporaryDirectory.count > 1 ? String(temporaryDirectory.dropLast()) : temporaryDirectory)
    let name = "hourglass-" + Self.safeName(executorID)
    let path = base + "/" + name
    let lockPath = path + ".lock"
    let lock = open(lockPath, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0o600)
    guard lock >= 0 else {
      throw ExecutorConfigurationError(field: "temporaryDirectory", problem: "cannot open \(lockPath): \(String(cString: strerror(errno)))")
    }
    guard flock(lock, LOCK_EX | LOCK_NB) == 0 else {
      let reason =
        errno == EWOULDBLOCK
        ? "another executor \(executorID) is running with this temporary directory (it holds \(lockPath))"
        : "cannot lock \(lockPath): \(String(cString: strerror(errno)))"
      close(lock)
      throw ExecutorConfigurationError(field: "temporaryDirectory", problem: reason)
    }
    if mkdir(path, 0o711) != 0 && errno != EEXIST {
      let reason = String(cString: strerror(errno))
      close(lock)
      throw ExecutorConfigurationError(field: "temporaryDirectory", problem: "cannot make \(path): \(reason)")
    }
    // Ours, whatever an earlier executor (or anyone) left: a directory (not a link to one), 0711.
    var info = stat()
    guard lstat(path, &info) == 0, info.st_mode & S_IFMT == S_IFDIR, info.st_uid == geteuid(), chmod(path, 0o711) == 0 else {
      close(lock)
      throw ExecutorConfigurationError(field: "temporaryDirectory", problem: "\(path) is not a directory of this user's")
    }
    self.path = path
    self.lock = lock
  }

  deinit {
    close(lock)
  }

  /// Removes every entry of the root (run directories an earlier executor left), each as a
  /// run's own directory is removed, on a thread of its own; returns how many there were. Call
  /// it before any run starts: every entry goes.
  func sweepLeftovers() async -> Int {
    let directory = path
    return await ExecOperator.onThreadOfItsOwn(named: "hg-sweep") {
      guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return 0 }
      for name in names { ExecOperator.removeRunDirectory(directory + "/" + name) }
      return names.count
    }
  }

  /// `id` as one path component: letters, digits, `.`, `_` and `-` kept, anything else `_`
  /// (and a leading `.` too).
  static func safeName(_ id: String) -> String {
    var name = String(
      id.unicodeScalars.map { scalar in
        scalar.isASCII && (CharacterSet.alphanumerics.contains(scalar) || "._-".unicodeScalars.contains(scalar)) ? Character(scalar) : "_"
      })
    if name.hasPrefix(".") { name = "_" + name.dropFirst() }
    return name.isEmpty ? "_" : name
  }
}
