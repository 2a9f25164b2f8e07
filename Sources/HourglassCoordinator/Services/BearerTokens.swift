import Foundation
import HourglassCore

/// Bearer tokens for users: which user each token authenticates. Only the tokens' SHA-256
/// digests are kept in memory, so a token is never held or logged in the clear after loading.
///
/// The file (`hourglass coordinator --tokens FILE`) has one token per line, `TOKEN USER_ID`,
/// separated by spaces or tabs; `TOKEN` may instead be written `sha256:HEX`, the SHA-256 of the
/// token, so the file need not contain the secret. Blank lines and lines starting with `#` are
/// ignored. A token may name one user only.
public struct BearerTokens: Sendable, Hashable {
  private var users: [BlobDigest: String] = [:]

  /// No tokens: users authenticate with certificates only.
  public init() {}

  /// Tokens in the clear, token → user id.
  public init(_ tokens: [String: String]) {
    for (token, user) in tokens { users[BlobDigest(of: Array(token.utf8))] = user }
  }

  /// How many tokens are configured.
  public var count: Int { users.count }

  /// The user `token` authenticates, if any.
  public func user(forToken token: String) -> String? {
    users[BlobDigest(of: Array(token.utf8))]
  }

  /// Parses the tokens file format; the error names the line.
  public static func parse(_ text: String) throws -> BearerTokens {
    var tokens = BearerTokens()
    for (index, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
      let line = rawLine.trimmingCharacters(in: .whitespacesAndNewlines)
      if line.isEmpty || line.hasPrefix("#") { continue }
      let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
      guard fields.count == 2 else {
        throw ConfigurationError(field: "tokens", reason: "line \(index + 1): expected \"TOKEN USER_ID\"")
      }
      let secret = String(fields[0])
      let user = String(fields[1])
      let digest: BlobDigest
      if secret.hasPrefix("sha256:") {
        guard let parsed = BlobDigest(hex: String(secret.dropFirst(7))) else {
          throw ConfigurationError(field: "tokens", reason: "line \(index + 1): sha256: needs 64 hex digits")
        }
        digest = parsed
      } else {
        guard secret.count >= 16 else {
          throw ConfigurationError(field: "tokens", reason: "line \(index + 1): a token must be at least 16 characters")
        }
        digest = BlobDigest(of: Array(secret.utf8))
      }
      if let existing = tokens.users[digest], existing != user {
        throw ConfigurationError(field: "tokens", reason: "line \(index + 1): the token is already given to another user")
      }
      tokens.users[digest] = user
    }
    return tokens
  }

  /// Reads and parses a tokens file.
  public static func load(path: String) throws -> BearerTokens {
    let text: String
    do {
      text = try String(contentsOfFile: path, encoding: .utf8)
    } catch {
      throw ConfigurationError(field: "tokens", reason: "cannot read \(path): \(error.localizedDescription)")
    }
    return try parse(text)
  }
}
