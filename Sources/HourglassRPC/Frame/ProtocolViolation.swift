/// A peer broke the protocol: the connection (or stream) is closed with the status it maps to.
public struct ProtocolViolation: Error, Hashable, Sendable, CustomStringConvertible {
  /// What kind of violation; decides the status code and whether the whole connection goes.
  public struct Kind: Hashable, Sendable, CustomStringConvertible {
    private let name: String
    /// The status code the peer is told.
    public let code: StatusCode

    private init(_ name: String, _ code: StatusCode) {
      self.name = name
      self.code = code
    }

    /// The connection did not start with the preface.
    public static let badPreface = Kind("bad preface", .unavailable)
    /// A frame larger than the receiver's maximum frame size.
    public static let frameTooLarge = Kind("frame too large", .resourceExhausted)
    /// A message larger than the receiver's maximum message size.
    public static let messageTooLarge = Kind("message too large", .resourceExhausted)
    /// More bytes of unfinished messages (MESSAGE frames with MORE, across the connection's
    /// streams) than the receiver holds for one connection.
    public static let unfinishedMessagesTooLarge = Kind("unfinished messages too large", .resourceExhausted)
    /// More concurrent streams than the receiver allows.
    public static let tooManyStreams = Kind("too many streams", .resourceExhausted)
    /// More messages than the receiver granted credits for.
    public static let creditExceeded = Kind("credit exceeded", .resourceExhausted)
    /// A frame whose header or payload cannot be parsed.
    public static let malformedFrame = Kind("malformed frame", .internal)
    /// A frame that is not allowed in the stream's or connection's current state.
    public static let unexpectedFrame = Kind("unexpected frame", .internal)
    /// A stream id that is not valid for the sender.
    public static let badStreamID = Kind("bad stream id", .internal)
    /// The first frame did not arrive in time.
    public static let settingsTimeout = Kind("settings timeout", .deadlineExceeded)

    public var description: String { name }
  }

  /// What kind of violation.
  public var kind: Kind
  /// A precise description for logs and for the GOAWAY / RESET message.
  public var message: String

  /// Creates a violation.
  public init(_ kind: Kind, _ message: String) {
    self.kind = kind
    self.message = message
  }

  public var description: String { "\(kind): \(message)" }

  /// The error the local side of an affected call sees.
  public var rpcError: RPCError { RPCError(code: kind.code, message: message, cause: self) }
}
