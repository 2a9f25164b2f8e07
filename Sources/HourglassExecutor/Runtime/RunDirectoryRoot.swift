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
    let held = "another executor \(executorID) is running with this temporary directory"
    let abandoned = try Self.claimFallbackRoots(in: base, named: name, held: held)
    let claimed: (root: Int32, lock: Int32, path: String, fallbackReason: String?)
    do throws(ClaimFailure) {
      claimed = try Self.claimUsualOrFallback(base: base, name: name, held: held)
      // Two executors of the id that started together may each have claimed a root of its own
      // (one the usual, one a fallback, or two fallbacks). Whichever locked later sees the
      // other's lock held now, and gives up its root.
      let mine = Set([claimed.path] + abandoned.map(\.path))
      if let other = Self.heldRoot(in: base, named: name, excluding: mine) {
        close(claimed.lock)
        close(claimed.root)
        if claimed.fallbackReason != nil { ExecOperator.removeRunDirectory(claimed.path) }
        throw ClaimFailure.failed("\(held) (it holds \(other)/\(Self.lockName))")
      }
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

  private static func reason(_ code: Int32) -> String { String(cString: strerror(code)) }

  /// `O_PATH` (glibc defines it only for `_GNU_SOURCE`): a descriptor that names a file without
  /// opening it, so it needs no read permission on it; `fstat` and the `*at` calls take it.
  private static let pathOnly: Int32 = 0o10_000_000

  /// A descriptor of `path` when it is a directory of this user's own, not a link to one,
  /// opened for reading; otherwise why not. It is checked through a descriptor that needs no
  /// permission on the directory itself (so another user's, of any mode, is told apart from a
  /// failure), and then the directory is opened through that descriptor, never by its path
  /// again.
  private static func openOwnDirectory(_ path: String) -> Result<Int32, ClaimFailure> {
    let named = open(path, pathOnly | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
    guard named >= 0 else {
      let code = errno
      let problem = "\(path) cannot be opened as a directory, not a link to one (\(reason(code)))"
      return .failure(code == ELOOP || code == ENOTDIR ? .notOurs(problem) : .failed(problem))
    }
    defer { close(named) }
    var info = stat()
    guard fstat(named, &info) == 0 else {
      let code = errno
      return .failure(.failed("cannot examine \(path): \(reason(code))"))
    }
    guard info.st_uid == geteuid() else {
      return .failure(.notOurs("\(path) belongs to another user (uid \(info.st_uid))"))
    }
    let directory = openat(named, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    guard directory >= 0 else {
      let code = errno
      return .failure(.failed("cannot open \(path): \(reason(code))"))
    }
    return .success(directory)
  }

  /// Claims `base/name`, or, when that is not a directory of this user's own, a new root
  /// `base/name@XXXXXX` (with the reason).
  private static func claimUsualOrFallback(
    base: String, name: String, held: String
  ) throws(ClaimFailure) -> (root: Int32, lock: Int32, path: String, fallbackReason: String?) {
    let usual = base + "/" + name
    do throws(ClaimFailure) {
      guard mkdir(usual, 0o700) == 0 || errno == EEXIST else {
        let code = errno
        throw ClaimFailure.failed("cannot make \(usual): \(reason(code))")
      }
      let (root, lock) = try claim(usual, held: held)
      return (root, lock, usual, nil)
    } catch .notOurs(let why) {
      var template = Array((usual + fallbackSeparator + "XXXXXX").utf8CString)
      let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) != nil }
      guard made else {
        let code = errno
        throw .failed("cannot make a root under \(base): \(reason(code))")
      }
      let fallback = String(decoding: template.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
      do throws(ClaimFailure) {
        let (root, lock) = try claim(fallback, held: held)
        return (root, lock, fallback, why)
      } catch {
        // Not left without a lock, where no later sweep would take it.
        ExecOperator.removeRunDirectory(fallback)
        throw error
      }
    }
  }

  /// Checks that `path` is a directory of this user's own, sets its mode to 0711 and takes its
  /// lock.
  private static func claim(_ path: String, held: String) throws(ClaimFailure) -> (root: Int32, lock: Int32) {
    let root = try openOwnDirectory(path).get()
    guard fchmod(root, 0o711) == 0 else {
      let code = errno
      close(root)
      throw .failed("cannot set the mode of \(path): \(reason(code))")
    }
    let lock = openat(root, lockName, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0o600)
    guard lock >= 0 else {
      let code = errno
      close(root)
      throw .failed("cannot open \(path)/\(lockName): \(reason(code))")
    }
    guard flock(lock, LOCK_EX | LOCK_NB) == 0 else {
      let code = errno
      close(lock)
      close(root)
      throw .failed(code == EWOULDBLOCK ? "\(held) (it holds \(path)/\(lockName))" : "cannot lock \(path)/\(lockName): \(reason(code))")
    }
    return (root, lock)
  }

  /// The names in `base` of the fallback roots of `name` (`name@XXXXXX`).
  private static func fallbackRoots(in base: String, named name: String) -> [String] {
    let prefix = name + fallbackSeparator
    let names = (try? FileManager.default.contentsOfDirectory(atPath: base)) ?? []
    return names.filter { $0.hasPrefix(prefix) && $0.utf8.count == prefix.utf8.count + 6 }
  }

  /// What trying the lock of an existing root found.
  private enum LockAttempt {
    /// Not a directory of this user's own, or no lock in it.
    case noLock
    /// Another executor holds the lock.
    case held
    /// Taken: the lock's descriptor, which holds it until closed.
    case taken(Int32)
  }

  /// Tries, without waiting, to take the lock of the root `path` (never making one).
  private static func tryLock(_ path: String) -> LockAttempt {
    guard case .success(let directory) = openOwnDirectory(path) else { return .noLock }
    defer { close(directory) }
    let lock = openat(directory, lockName, O_RDWR | O_NOFOLLOW | O_CLOEXEC)
    guard lock >= 0 else { return .noLock }
    guard flock(lock, LOCK_EX | LOCK_NB) == 0 else {
      close(lock)
      return .held
    }
    return .taken(lock)
  }

  /// Takes the locks of the fallback roots that earlier executors of the id left in `base`, to
  /// be removed by ``sweepLeftovers()``.
  ///
  /// - Throws: when one of them is locked: another executor of the id is running on it.
  private static func claimFallbackRoots(
    in base: String, named name: String, held: String
  ) throws(ExecutorConfigurationError) -> [(path: String, lock: Int32)] {
    var claimed: [(path: String, lock: Int32)] = []
    for entry in fallbackRoots(in: base, named: name) {
      let path = base + "/" + entry
      switch tryLock(path) {
      case .noLock:
        // No lock: an executor taking it right now, or one that died before it did (then the
        // directory is empty: nothing ran in it). An empty one of the latter kind goes.
        var info = stat()
        if lstat(path, &info) == 0, time(nil) - info.st_mtim.tv_sec > 60 { rmdir(path) }
      case .held:
        for earlier in claimed { close(earlier.lock) }
        throw failure("\(held) (it holds \(path)/\(lockName))")
      case .taken(let lock):
        claimed.append((path, lock))
      }
    }
    return claimed
  }

  /// A root of `name` in `base` (the usual one or a fallback), other than those in
  /// `excluding`, whose lock another executor holds; nil when there is none.
  static func heldRoot(in base: String, named name: String, excluding: Set<String>) -> String? {
    let candidates = [base + "/" + name] + fallbackRoots(in: base, named: name).map { base + "/" + $0 }
    for path in candidates where !excluding.contains(path) {
      switch tryLock(path) {
      case .noLock: continue
      case .held: return path
      case .taken(let lock): close(lock)
      }
    }
    return nil
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
