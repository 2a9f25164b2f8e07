import Crypto
import Foundation
import Synchronization

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
/// In a directory every user can write, such as `/tmp`, another user can take the name first.
/// The executor then makes a root of its own under an unpredictable name,
/// `hourglass-<id>@XXXXXX` (``fallbackReason`` says why), so nobody can keep it from starting.
/// Such roots are locked the same way; the next executor of the id removes those whose lock is
/// free, and is refused while one is held.
final class RunDirectoryRoot: Sendable {
  /// The directory the `exec` operator makes its run directories in.
  let path: String
  /// Why the usual root, `hourglass-<id>`, was not used (another user's, or not a directory of
  /// its own), when ``path`` is a root under an unpredictable name instead; nil otherwise.
  let fallbackReason: String?
  /// The lock file's name, inside the root (the sweep leaves it).
  static let lockName = ".lock"
  /// What separates a fallback root's random part from the id's name: a character
  /// ``safeName(_:)`` never keeps, so no id's usual root looks like another id's fallback.
  static let fallbackSeparator = "@"
  private let root: Int32
  private let lock: Int32
  /// Fallback roots an earlier executor of the id left, each with its lock, which this one holds
  /// until ``sweepLeftovers()`` removes them.
  private let abandoned: Mutex<[(path: String, lock: Int32)]>

  /// Claims the root of executor `executorID` under `temporaryDirectory` (an absolute path):
  /// makes the directory (mode 0711: a `runAs` user reaches its own run's directory through
  /// it, and lists nothing) and takes its lock. ``sweepLeftovers()`` then removes whatever an
  /// earlier executor left in it.
  ///
  /// - Throws: ``ExecutorConfigurationError`` when another executor of the id holds a lock, or
  ///   a root or its lock cannot be made.
  init(temporaryDirectory: String, executorID: String) throws(ExecutorConfigurationError) {
    let base = temporaryDirectory.hasSuffix("/") && temporaryDirectory.count > 1 ? String(temporaryDirectory.dropLast()) : temporaryDirectory
    let name = "hourglass-" + Self.safeName(executorID)
    let abandoned = try Self.claimFallbackRoots(in: base, named: name, executorID: executorID)
    let claimed: (root: Int32, lock: Int32, path: String, fallbackReason: String?)
    do throws(ClaimFailure) {
      claimed = try Self.claimUsualOrFallback(base: base, name: name, executorID: executorID)
    } catch {
      for entry in abandoned { close(entry.lock) }
      throw Self.failure(error)
    }
    self.path = claimed.path
    self.root = claimed.root
    self.lock = claimed.lock
    self.fallbackReason = claimed.fallbackReason
    self.abandoned = Mutex(abandoned)
  }

  deinit {
    for entry in abandoned.withLock({ $0 }) { close(entry.lock) }
    close(lock)
    close(root)
  }

  private enum ClaimFailure: Error {
    /// The path is not a directory of this user's own (another user's, or a link): another
    /// name will do.
    case notOurs(String)
    /// Anything else: the executor cannot start.
    case failed(String)
  }

  private static func failure(_ problem: String) -> ExecutorConfigurationError {
    ExecutorConfigurationError(field: "temporaryDirectory", problem: problem)
  }

  private static func failure(_ claim: ClaimFailure) -> ExecutorConfigurationError {
    switch claim {
    case .notOurs(let problem), .failed(let problem): failure(problem)
    }
  }

  private static func reason() -> String { String(cString: strerror(errno)) }

  /// Claims `base/name`, or, when that is not a directory of this user's own, a new root
  /// `base/name@XXXXXX` (with the reason).
  private static func claimUsualOrFallback(
    base: String, name: String, executorID: String
  ) throws(ClaimFailure) -> (root: Int32, lock: Int32, path: String, fallbackReason: String?) {
    let usual = base + "/" + name
    do throws(ClaimFailure) {
      let (root, lock) = try claim(usual, executorID: executorID, making: { mkdir($0, 0o700) == 0 || errno == EEXIST })
      return (root, lock, usual, nil)
    } catch .notOurs(let reason) {
      var template = Array((usual + fallbackSeparator + "XXXXXX").utf8CString)
      let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) != nil }
      guard made else { throw .failed("cannot make a root under \(base): \(Self.reason())") }
      let fallback = String(decoding: template.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
      let (root, lock) = try claim(fallback, executorID: executorID, making: { _ in true })
      return (root, lock, fallback, reason)
    }
  }

  /// Makes `path` with `make` (true when it exists afterwards), checks through a descriptor
  /// that it is a directory of this user's own, sets its mode to 0711 and takes its lock.
  private static func claim(
    _ path: String, executorID: String, making make: (String) -> Bool
  ) throws(ClaimFailure) -> (root: Int32, lock: Int32) {
    guard make(path) else { throw .failed("cannot make \(path): \(reason())") }
    // From here on through descriptors: the directory itself (never a link to one), and ours.
    let root = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
    guard root >= 0 else {
      let problem = "\(path) cannot be opened as a directory, not a link to one (\(reason()))"
      if errno == ELOOP || errno == ENOTDIR { throw .notOurs(problem) }
      throw .failed(problem)
    }
    var info = stat()
    guard fstat(root, &info) == 0, info.st_uid == geteuid() else {
      close(root)
      throw .notOurs("\(path) belongs to another user (uid \(info.st_uid))")
    }
    guard fchmod(root, 0o711) == 0 else {
      let problem = "cannot set the mode of \(path): \(reason())"
      close(root)
      throw .failed(problem)
    }
    let lock = openat(root, lockName, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0o600)
    guard lock >= 0 else {
      let problem = "cannot open \(path)/\(lockName): \(reason())"
      close(root)
      throw .failed(problem)
    }
    guard flock(lock, LOCK_EX | LOCK_NB) == 0 else {
      let problem =
        errno == EWOULDBLOCK
        ? "another executor \(executorID) is running with this temporary directory (it holds \(path)/\(lockName))"
        : "cannot lock \(path)/\(lockName): \(reason())"
      close(lock)
      close(root)
      throw .failed(problem)
    }
    return (root, lock)
  }

  /// Takes the locks of the fallback roots (`name@XXXXXX`, this user's own directories) that
  /// earlier executors of the id left in `base`, to be removed by ``sweepLeftovers()``.
  ///
  /// - Throws: when one of them is locked: another executor of the id is running on it.
  private static func claimFallbackRoots(
    in base: String, named name: String, executorID: String
  ) throws(ExecutorConfigurationError) -> [(path: String, lock: Int32)] {
    let prefix = name + fallbackSeparator
    let names = (try? FileManager.default.contentsOfDirectory(atPath: base)) ?? []
    var claimed: [(path: String, lock: Int32)] = []
    for entry in names where entry.hasPrefix(prefix) && entry.utf8.count == prefix.utf8.count + 6 {
      let path = base + "/" + entry
      let directory = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
      guard directory >= 0 else { continue }
      defer { close(directory) }
      var info = stat()
      guard fstat(directory, &info) == 0, info.st_uid == geteuid() else { continue }
      let lock = openat(directory, lockName, O_RDWR | O_NOFOLLOW | O_CLOEXEC)
      // No lock yet: an executor that is taking it now, or one that died before it did (then
      // the directory is empty, nothing ran in it). Left alone either way.
      guard lock >= 0 else { continue }
      guard flock(lock, LOCK_EX | LOCK_NB) == 0 else {
        close(lock)
        for earlier in claimed { close(earlier.lock) }
        throw failure("another executor \(executorID) is running with this temporary directory (it holds \(path)/\(lockName))")
      }
      claimed.append((path, lock))
    }
    return claimed
  }

  /// Removes every entry of the root but its lock (run directories an earlier executor left),
  /// and the fallback roots earlier executors of the id left, each as a run's own directory is
  /// removed, on a thread of its own; returns how many run directories and roots were removed.
  /// Call it before any run starts: every entry goes.
  func sweepLeftovers() async -> Int {
    let directory = path
    let roots = abandoned.withLock { roots in
      defer { roots = [] }
      return roots
    }
    return await ExecOperator.onThreadOfItsOwn(named: "hg-sweep") {
      func remove(_ entry: String) -> Int {
        ExecOperator.removeRunDirectory(entry)
        var info = stat()
        return lstat(entry, &info) != 0 ? 1 : 0
      }
      var removed = 0
      for root in roots {
        removed += remove(root.path)
        close(root.lock)
      }
      guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return removed }
      for name in names where name != Self.lockName {
        removed += remove(directory + "/" + name)
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
