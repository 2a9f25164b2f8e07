import Crypto
import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// An executor's own directory for its runs' directories, `<temporary directory>/hourglass-<id>`,
/// held for the executor's life by an exclusive lock on the file `.lock` inside it.
///
/// A run's directory is removed when its run ends; one an executor left when it died (killed,
/// or its machine lost power) is removed by the next executor of that id to start here, which
/// finds the lock free. The lock is what makes that sweep safe: it never touches the directories
/// of a live executor, in this process or another, since two executors of one id cannot hold
/// the lock together (a second one is refused at start). The kernel drops the lock with its
/// holder, however that ends.
///
/// The directory is checked through a descriptor (the directory itself, not a link to one, and
/// this user's) before the lock is made inside it, so no other user can plant the lock file.
/// In a directory every user can write, such as `/tmp`, another user can still take the name
/// first, and the executor then refuses to start, saying so: give executors a temporary
/// directory of their own (`--temporary-directory`) where that matters.
final class RunDirectoryRoot: Sendable {
  /// The directory the `exec` operator makes its run directories in.
  let path: String
  /// The lock file's name, inside the root (the sweep leaves it).
  static let lockName = ".lock"
  private let root: Int32
  private let lock: Int32

  /// Claims the root of executor `executorID` under `temporaryDirectory` (an absolute path):
  /// makes the directory (mode 0711: a `runAs` user reaches its own run's directory through
  /// it, and lists nothing) and takes its lock. ``sweepLeftovers()`` then removes whatever an
  /// earlier executor left in it.
  ///
  /// - Throws: ``ExecutorConfigurationError`` when another executor holds the lock, or the
  ///   directory is not this user's, or it or the lock cannot be made.
  init(temporaryDirectory: String, executorID: String) throws(ExecutorConfigurationError) {
    func failure(_ problem: String) -> ExecutorConfigurationError { ExecutorConfigurationError(field: "temporaryDirectory", problem: problem) }
    func reason() -> String { String(cString: strerror(errno)) }
    let base = temporaryDirectory.hasSuffix("/") && temporaryDirectory.count > 1 ? String(temporaryDirectory.dropLast()) : temporaryDirectory
    let path = base + "/hourglass-" + Self.safeName(executorID)
    guard mkdir(path, 0o700) == 0 || errno == EEXIST else { throw failure("cannot make \(path): \(reason())") }
    // From here on through descriptors: the directory itself (never a link to one), and ours.
    let root = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
    guard root >= 0 else { throw failure("cannot open \(path) as a directory (not a link to one): \(reason())") }
    var info = stat()
    guard fstat(root, &info) == 0, info.st_uid == geteuid() else {
      close(root)
      throw failure("\(path) belongs to another user (uid \(info.st_uid)); choose a temporary directory of this executor's own")
    }
    guard fchmod(root, 0o711) == 0 else {
      let problem = "cannot set the mode of \(path): \(reason())"
      close(root)
      throw failure(problem)
    }
    let lock = openat(root, Self.lockName, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0o600)
    guard lock >= 0 else {
      let problem = "cannot open \(path)/\(Self.lockName): \(reason())"
      close(root)
      throw failure(problem)
    }
    guard flock(lock, LOCK_EX | LOCK_NB) == 0 else {
      let problem =
        errno == EWOULDBLOCK
        ? "another executor \(executorID) is running with this temporary directory (it holds \(path)/\(Self.lockName))"
        : "cannot lock \(path)/\(Self.lockName): \(reason())"
      close(lock)
      close(root)
      throw failure(problem)
    }
    self.path = path
    self.root = root
    self.lock = lock
  }

  deinit {
    close(lock)
    close(root)
  }

  /// Removes every entry of the root but its lock (run directories an earlier executor left),
  /// each as a run's own directory is removed, on a thread of its own; returns how many were
  /// removed. Call it before any run starts: every entry goes.
  func sweepLeftovers() async -> Int {
    let directory = path
    return await ExecOperator.onThreadOfItsOwn(named: "hg-sweep") {
      guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return 0 }
      var removed = 0
      for name in names where name != Self.lockName {
        let entry = directory + "/" + name
        ExecOperator.removeRunDirectory(entry)
        var info = stat()
        if lstat(entry, &info) != 0 { removed += 1 }
      }
      return removed
    }
  }

  /// The most characters of an executor id kept in the root's name.
  static let nameLimit = 64

  /// `id` as one path component: letters, digits, `.`, `_` and `-` kept, anything else `_`
  /// (and a leading `.` too). When that changed the id, or it was longer than ``nameLimit``, a
  /// hash of the whole id follows, so that two ids never share a root.
  static func safeName(_ id: String) -> String {
    var name = String(
      id.unicodeScalars.map { scalar in
        scalar.isASCII && (CharacterSet.alphanumerics.contains(scalar) || "._-".unicodeScalars.contains(scalar)) ? Character(scalar) : "_"
      })
    if name.hasPrefix(".") { name = "_" + name.dropFirst() }
    guard name != id || name.isEmpty || name.count > nameLimit else { return name }
    let digest = SHA256.hash(data: Data(id.utf8)).prefix(6).map { String(format: "%02x", $0) }.joined()
    return String(name.prefix(nameLimit - 13)) + "-" + digest
  }
}
