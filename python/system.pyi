"""Type stubs for the `system` module that secsgate injects into handler scripts.

Point your editor at this folder (for example `"python.analysis.stubPath": "python"` in VS
Code, or `mypy_path = python`) to get completion and type checks in `handlers/*.py` and
`lib/*.py`. Handlers also receive the global `payload` (see `RealtimePayload`, also the
payload of an `[[equipment.handler]]`, and `CustomResponsePayload`).
"""

from typing import Any, Dict, Iterator, List, Optional, Sequence, TypedDict, Union

class ScriptTimeout(BaseException):
    """Raised inside a handler that ran past the gateway's handler_timeout."""

class Payload(dict):
    """The type of `payload` in realtime and custom response handlers: a dict whose "Message"
    (JSON text) is made on first use. It behaves as a plain dict holding "Message"."""

JsonBody = Union[str, dict, list]
"""A message body: "" for none, JSON text, an item dict {"format", "value"} or a list (L)."""

class MessageHeader(TypedDict, total=False):
    doc: str
    stream: int
    function: int
    reply: bool

class SecsMessage(TypedDict):
    header: MessageHeader
    body: Any

class RealtimePayload(TypedDict):
    """`payload` of handlers/onSecsGemRealtimeUpdate.py and of an [[equipment.handler]]."""
    CommonID: str  # the values of the items the SDL's CommonID names, else the TxID as text
    Equipment: str
    Direction: str
    RequestResponse: str
    TxID: int
    Reply: bool
    Message: str  # the message as JSON text: system.util.jsonDecode(payload["Message"])
    StreamFunction: str
    MessageName: str  # the SDL definition the message matched ("" for an unnamed one or none)
    SystemBytes: int
    Timestamp: str

class CustomResponsePayload(TypedDict):
    """`payload` of a custom response handler (equipment.custom_response in project.toml)."""
    Equipment: str
    TxID: int
    SystemBytes: int
    StreamFunction: str
    MessageName: str  # the SDL definition the message matched ("" for an unnamed one or none)
    Message: str

class StartupPayload(TypedDict):
    """`payload` of handlers/onStartup.py."""
    Equipment: List[str]
    Communicating: List[str]

class _Dataset:
    def getColumnNames(self) -> List[str]: ...
    def getColumnName(self, index: int) -> str: ...
    def getColumnIndex(self, name: str) -> int: ...
    def getColumnCount(self) -> int: ...
    def getRowCount(self) -> int: ...
    def getValueAt(self, row: int, col: Union[int, str]) -> Any: ...
    def getColumnAsList(self, col: Union[int, str]) -> List[Any]: ...
    def __len__(self) -> int: ...
    def __getitem__(self, row: int) -> List[Any]: ...
    def __iter__(self) -> Iterator[List[Any]]: ...

class dataset:
    Dataset = _Dataset

class secsgem:
    class SecsGemError(Exception):
        """Unknown equipment, equipment not communicating or disabled, unknown or already
        answered transaction, message not matching the SDL, send failure; also a call from a
        thread the gateway did not start (system.secsgem works only on handler threads)."""

    @staticmethod
    def sendRequest(streamFunction: str, reply: bool, body: JsonBody, equipment: str) -> int:
        """Sends a message to the equipment; returns its transaction ID at once."""
    @staticmethod
    def getResponse(transactionID: int, equipment: str, timeout: float = 5, poll: int = 150) -> Optional[SecsMessage]:
        """The reply to a transaction, waiting up to `timeout` seconds; None if there is none.
        A reply that comes later stays retrievable by another call."""
    @staticmethod
    def sendResponse(transactionID: int, systemBytes: int, streamFunction: str, body: JsonBody, equipment: str) -> None:
        """Answers a message the equipment sent (in a custom response handler)."""
    @staticmethod
    def toDataset(secsObject: Union[SecsMessage, str, list, dict]) -> _Dataset:
        """One row per item: path, doc, format, value, codeDesc."""
    @staticmethod
    def toDataSet(secsObject: Union[SecsMessage, str, list, dict]) -> _Dataset: ...
    @staticmethod
    def toTreeDataset(dataset: _Dataset) -> _Dataset:
        """The toDataset rows as a tree view's 13 columns (path, text, icon, ...)."""
    @staticmethod
    def toTreeDataSet(dataset: _Dataset) -> _Dataset: ...
    @staticmethod
    def copyEquipment(
        equipmentSource: str,
        newEquipmentName: str,
        enabled: bool,
        activeAddress: Optional[str],
        activePort: Optional[int],
        passiveAddress: Optional[str],
        passivePort: Optional[int],
        deviceId: int,
        dbTablePrefix: Optional[str] = None,
        description: Optional[str] = None,
    ) -> None:
        """Starts a copy of a connection under a new name (for this run of the gateway)."""
    @staticmethod
    def startSimEventRun(simulatorName: str, eventRunName: str) -> None:
        """Starts an event run of a simulator running in this gateway ([[simulator]])."""
    @staticmethod
    def enableDisableEquipment(enable: bool, names: Sequence[str]) -> List[str]:
        """Enables or disables connections; one message per name that failed (empty = success)."""
    @staticmethod
    def getToolProgram(ppid: str) -> Optional[Dict[str, Any]]:
        """A process program a tool sent in S7F3: {'ppid', 'editDate', 'ppbody', 'ppBody',
        'bodyFormat'} (ppbody is text for 'A', a list of byte values for 'B'); None if unknown."""
    @staticmethod
    def getToolProgramDataset() -> _Dataset:
        """Every stored process program: columns ppid, editDate, bodyFormat."""
    @staticmethod
    def deleteToolProgram(ppid: str) -> None:
        """Deletes a stored process program (a warning is logged if there is none)."""

class _Logger:
    def getName(self) -> str: ...
    def trace(self, message: Any) -> None: ...
    def debug(self, message: Any) -> None: ...
    def info(self, message: Any) -> None: ...
    def warn(self, message: Any) -> None: ...
    def error(self, message: Any) -> None: ...
    def tracef(self, format: str, *args: Any) -> None: ...
    def debugf(self, format: str, *args: Any) -> None: ...
    def infof(self, format: str, *args: Any) -> None: ...
    def warnf(self, format: str, *args: Any) -> None: ...
    def errorf(self, format: str, *args: Any) -> None: ...
    def isTraceEnabled(self) -> bool: ...
    def isDebugEnabled(self) -> bool: ...
    def isInfoEnabled(self) -> bool: ...
    def isWarnEnabled(self) -> bool: ...
    def isErrorEnabled(self) -> bool: ...

class util:
    class Logger(_Logger):
        """The type getLogger returns."""

    @staticmethod
    def getLogger(name: str) -> _Logger:
        """A logger writing to the gateway log under `name`."""
    @staticmethod
    def jsonEncode(pyObj: Any, indentFactor: int = 0) -> str: ...
    @staticmethod
    def jsonDecode(jsonString: str) -> Any: ...

class _QualityCode:
    def isGood(self) -> bool: ...
    def isBad(self) -> bool: ...
    def getName(self) -> str: ...

class _QualifiedValue:
    value: Any
    quality: _QualityCode
    timestamp: str  # ISO 8601, UTC
    def getValue(self) -> Any: ...
    def getQuality(self) -> _QualityCode: ...
    def getTimestamp(self) -> str: ...

class _BrowseResults:
    def getResults(self) -> List[Dict[str, Any]]: ...
    def getReturnedSize(self) -> int: ...
    def __iter__(self) -> Iterator[Dict[str, Any]]: ...
    def __len__(self) -> int: ...

class tag:
    """The gateway's realtime tags ([SECSGEM]Equipment/...), read-only."""
    class TagWriteError(Exception):
        """Raised by the write functions: the tags are read-only."""
    class QualityCode(_QualityCode): ...
    class QualifiedValue(_QualifiedValue): ...
    class BrowseResults(_BrowseResults): ...

    @staticmethod
    def readBlocking(tagPaths: Union[str, Sequence[str]], timeoutMillis: int = 45000) -> List[_QualifiedValue]:
        """One QualifiedValue per path; an unknown path has quality Bad_NotFound."""
    @staticmethod
    def readAll(tagPaths: Union[str, Sequence[str]], timeoutMillis: int = 45000) -> List[_QualifiedValue]: ...
    @staticmethod
    def browse(path: str = "[SECSGEM]", filter: Optional[dict] = None) -> _BrowseResults:
        """The tags and folders under a path: dicts with name, fullPath, hasChildren, tagType, value."""
    @staticmethod
    def writeBlocking(*args: Any, **kwargs: Any) -> None:
        """Raises TagWriteError."""
    @staticmethod
    def writeAsync(*args: Any, **kwargs: Any) -> None:
        """Raises TagWriteError."""
    @staticmethod
    def write(*args: Any, **kwargs: Any) -> None:
        """Raises TagWriteError."""

class db:
    """SQL against the project's SQLite databases ("" = data/secsgate.sqlite, or a [[database]] name)."""
    class DatabaseError(Exception):
        """Unknown database, bad SQL, or the database refused the statement."""

    @staticmethod
    def runQuery(query: str, database: str = "", tx: Any = None) -> _Dataset: ...
    @staticmethod
    def runPrepQuery(query: str, args: Sequence[Any] = ..., database: str = "", tx: Any = None) -> _Dataset: ...
    @staticmethod
    def runUpdateQuery(query: str, database: str = "", tx: Any = None, getKey: bool = False, skipAudit: bool = False) -> int:
        """Rows changed, or the new row's key with getKey."""
    @staticmethod
    def runPrepUpdate(query: str, args: Sequence[Any] = ..., database: str = "", tx: Any = None, getKey: bool = False, skipAudit: bool = False) -> int:
        """Rows changed, or the new row's key with getKey."""
