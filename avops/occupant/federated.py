"""One federated round with Flower: vehicles train locally with DP-SGD, the cloud aggregates updates.

The vehicle side is a Flower ``ClientApp``: it reads the cabin frames from the vehicle's own
store, trains the received global model with Opacus (record-level differential privacy: every
frame's gradient is clipped and Gaussian noise is added before the optimiser step), keeps its
privacy ledger in the vehicle, and replies with the model weights and a few scalars.

The cloud side is Flower's strategy (``FedAvg`` or ``FedTrimmedAvg``) driving a :class:`UplinkGrid`:
the Flower ``Grid`` through which every message to and from a vehicle passes. It delivers the
server's messages to the vehicles (here: in process, as a fleet's connectivity agent would over
the air) and records every byte a vehicle sent, by digest, in the uplink log: the only channel
from a car to the cloud, and what the no-upload audit (``avops.occupant.privacy``) inspects.
A vehicle that does not answer within the round's timeout is dropped from that round.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import threading
import time
import uuid
import warnings
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, FedTrimmedAvg
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from avops.occupant import model as net
from avops.occupant.cabin import FRAMES_FILE, read_frames
from avops.occupant.config import OccupantConfig
from avops.occupant.privacy import LEGACY_METRICS_RECORD, METRIC_RECORD, SECAGG_RECORD, UPDATE_RECORD
from avops.store import atomic_write_json

PRIVACY_LEDGER = "fl_privacy.json"  # in the vehicle: the DP-SGD releases this vehicle's frames took part in
FAULTS = ("drop", "slow", "leak_frame")
_TRAIN_LOCK = threading.Lock()  # one local training at a time on this host (deterministic seeds, 2 cores)
logging.getLogger("flwr").setLevel(logging.WARNING)


class RoundFailed(RuntimeError):
    """The round cannot produce a global model (too few participants, no vehicles): says what to do."""


class VehicleOffline(ConnectionError):
    """The vehicle's link dropped before its reply was sent."""


# ---------------------------------------------------------------------------------------------
# vehicle side


def _load_ledger(vehicle_root: Path) -> list[tuple[float, float, int]]:
    p = vehicle_root / PRIVACY_LEDGER
    return [tuple(h) for h in json.loads(p.read_text())["history"]] if p.exists() else []


def vehicle_epsilon(history: list[tuple[float, float, int]], delta: float) -> float:
    """ε this vehicle's frames have spent so far (Opacus' RDP accountant over the vehicle's own ledger)."""
    from opacus.accountants import RDPAccountant

    if not history:
        return 0.0
    acc = RDPAccountant()
    acc.history = [tuple(h) for h in history]
    return float(acc.get_epsilon(delta))


class BudgetExhausted(RuntimeError):
    """The vehicle declines: another round would take its privacy ledger past ``max_epsilon``."""


def train_locally(vehicle_root: Path, config: OccupantConfig, fault: str | None, state: dict[str, torch.Tensor],
                  cfg) -> tuple[dict[str, np.ndarray], dict, np.ndarray]:
    """DP-SGD (Opacus) on the vehicle's own frames from the global model ``state``; the ledger stays in the vehicle.

    Returns the new weights, the scalars a vehicle may report, and one frame (for the ``leak_frame`` fault only)."""
    from opacus import PrivacyEngine

    frames, labels, _ = read_frames(vehicle_root / "cabin" / FRAMES_FILE, config)
    n = len(frames)
    batch, epochs = int(cfg["batch-size"]), int(cfg["local-epochs"])
    sigma, clip, delta, max_eps = (float(cfg[k]) for k in ("noise-multiplier", "max-grad-norm", "delta", "max-epsilon"))
    history = _load_ledger(vehicle_root)
    q = min(1.0, batch / n)
    steps = epochs * max(1, round(n / batch))
    if vehicle_epsilon(history + [(sigma, q, steps)], delta) > max_eps:
        raise BudgetExhausted(f"privacy budget: another round would exceed ε={max_eps}")
    if fault == "slow":
        time.sleep(float(cfg["timeout-s"]) + 1.0)
    y = torch.as_tensor(labels["state"].map({s: i for i, s in enumerate(config.states)}).to_numpy(), dtype=torch.long)
    with _TRAIN_LOCK, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(Secure RNG|Full backward hook|Optimal order).*")
        seed = int(cfg["seed"]) * 7919 + int.from_bytes(hashlib.sha256(vehicle_root.name.encode()).digest()[:4], "little")
        torch.manual_seed(seed)
        model = net.DriverStateNet(len(config.states))
        model.load_state_dict(state)
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(net.to_tensor(frames), y), batch_size=batch,
                                             generator=torch.Generator().manual_seed(seed))
        opt = torch.optim.SGD(model.parameters(), lr=float(cfg["learning-rate"]), momentum=float(cfg["momentum"]))
        engine = PrivacyEngine(accountant="rdp")
        engine.accountant.history = list(history)
        dp_model, dp_opt, dp_loader = engine.make_private(
            module=model, optimizer=opt, data_loader=loader, noise_multiplier=sigma, max_grad_norm=clip, poisson_sampling=True,
            noise_generator=torch.Generator().manual_seed(seed + 1))
        losses, taken = [], 0
        dp_model.train()
        for _ in range(epochs):
            for xb, yb in dp_loader:
                dp_opt.zero_grad()
                if len(yb) == 0:  # Poisson sampling can draw an empty lot: still a step of the accountant
                    dp_opt.step()
                    taken += 1
                    continue
                loss = torch.nn.functional.cross_entropy(dp_model(xb), yb)
                loss.backward()
                dp_opt.step()
                losses.append(float(loss.detach()))
                taken += 1
        new_history = [tuple(h) for h in engine.accountant.history]
        weights = net.get_arrays(dp_model)
    atomic_write_json(vehicle_root / PRIVACY_LEDGER, {"history": new_history, "delta": delta})
    if fault == "drop":
        raise VehicleOffline(f"{vehicle_root.name}: link lost before the update was sent")
    metrics = {"num-examples": n, "train-loss": float(np.mean(losses)) if losses else float("nan"),
               "epsilon": vehicle_epsilon(new_history, delta), "dp-steps": taken, "dp-sample-rate": q}
    return weights, metrics, frames[0]


def client_app(vehicle_root: Path, config: OccupantConfig, fault: str | None = None) -> ClientApp:
    """The ClientApp of one vehicle. ``fault`` plants a failure for tests and the demo: ``drop`` (the
    link drops mid-round), ``slow`` (answers after the timeout), ``leak_frame`` (a debug hook that
    attaches a cabin frame to the reply: what the no-upload audit must catch)."""
    if fault is not None and fault not in FAULTS:
        raise ValueError(f"unknown planted fault {fault!r}: one of {FAULTS}")
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        try:
            weights, metrics, frame = train_locally(vehicle_root, config, fault, msg.content["arrays"].to_torch_state_dict(),
                                                    msg.content["config"])
        except BudgetExhausted as exc:
            return Message(Error(code=403, reason=str(exc)), reply_to=msg)
        content = RecordDict({UPDATE_RECORD: ArrayRecord({k: torch.from_numpy(v) for k, v in weights.items()}),
                              METRIC_RECORD: MetricRecord(metrics)})
        if fault == "leak_frame":
            content["debug"] = ConfigRecord({"frame": frame.tobytes(), "note": "debug snapshot"})
        return Message(content, reply_to=msg)

    return app


def secure_client_app(vehicle_root: Path, config: OccupantConfig, fault: str | None = None) -> ClientApp:
    """The same vehicle under Flower's SecAgg+ protocol (``secaggplus_mod``): it uploads its update
    masked, so that the cloud can only learn the sum of the cohort's updates, never one vehicle's.
    Flower implements SecAgg+ for its legacy client/strategy API, hence a ``NumPyClient`` here."""
    from flwr.client import NumPyClient
    from flwr.client.mod import secaggplus_mod

    if fault is not None and fault not in FAULTS:
        raise ValueError(f"unknown planted fault {fault!r}: one of {FAULTS}")
    keys = list(net.DriverStateNet(len(config.states)).state_dict())

    class Car(NumPyClient):
        def fit(self, parameters, cfg):
            state = {k: torch.from_numpy(np.asarray(a)) for k, a in zip(keys, parameters)}
            weights, metrics, frame = train_locally(vehicle_root, config, fault, state, cfg)
            if fault == "leak_frame":
                metrics = {**metrics, "debug-frame": frame.tobytes()}
            return [weights[k] for k in keys], int(metrics["num-examples"]), metrics

    return ClientApp(client_fn=lambda context: Car().to_client(), mods=[secaggplus_mod])


# ---------------------------------------------------------------------------------------------
# cloud side


@dataclass
class Vehicle:
    """A vehicle enrolled in the federation: its node id and pseudonym are all the cloud knows of it."""

    node_id: int
    pseudonym: str
    app: ClientApp
    root: Path  # the vehicle's own store (simulation: the car's storage)


@dataclass
class UplinkEntry:
    pseudonym: str
    node_id: int
    message_id: str
    received_s: float
    records: dict[str, dict] = field(default_factory=dict)  # record name -> {kind, items: {key: {sha256, ...}}}
    error: str | None = None


class UplinkGrid(Grid):
    """Flower's ``Grid`` over the vehicles of one cohort, logging every uplinked byte by digest.

    ``put`` stores each uplinked array / value in the cloud object store (what a real uplink
    endpoint would persist); the log says which vehicle sent what, and which did not answer."""

    def __init__(self, vehicles: list[Vehicle], put, round_id: str, workers: int = 4):
        self._vehicles = {v.node_id: v for v in vehicles}
        self._put = put
        self._round_id = round_id
        self._run = Run.create_empty(run_id=1)
        # Flower's messages take their sender from the process's task identity: here, the cloud side
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = self._run.run_id, SUPERLINK_NODE_ID, 0
        self._pool = ThreadPoolExecutor(max_workers=max(1, min(workers, len(vehicles))), thread_name_prefix="vehicle")
        self._futures: dict[str, tuple[Vehicle, object]] = {}
        self._contexts: dict[int, Context] = {}  # each vehicle's own state across the messages of a round (SecAgg+ stages)
        self.uplink: list[UplinkEntry] = []
        self.dropped: dict[str, str] = {}
        self.sent: list[str] = []

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str, ttl: float | None = None) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self._vehicles)

    def _deliver(self, vehicle: Vehicle, msg: Message) -> Message:
        ctx = self._contexts.setdefault(vehicle.node_id, Context(run_id=self._run.run_id, node_id=vehicle.node_id, node_config={},
                                                                 state=RecordDict(), run_config={}))
        # the air interface: a vehicle gets its own copy of the message, as it would from the wire (Flower's mods edit
        # the records they receive, and the cloud sends one record to every vehicle)
        return vehicle.app(copy.deepcopy(msg), ctx)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = str(uuid.uuid4())
            vehicle = self._vehicles[msg.metadata.dst_node_id]
            self._futures[msg.metadata.message_id] = (vehicle, self._pool.submit(self._deliver, vehicle, msg))
            self.sent.append(vehicle.pseudonym)
            ids.append(msg.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        out = []
        for mid in list(message_ids):
            vehicle, fut = self._futures[mid]
            if not fut.done():
                continue
            del self._futures[mid]
            exc = fut.exception()
            if exc is not None:  # the vehicle never sent a reply: nothing reached the cloud
                self.dropped[vehicle.pseudonym] = f"{type(exc).__name__}: {exc}"
                continue
            reply = fut.result()
            reply.metadata.__dict__["_src_node_id"] = vehicle.node_id
            self.uplink.append(self._log(vehicle, mid, reply))
            out.append(reply)
        return out

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        ids = set(self.push_messages(messages))
        end = time.monotonic() + (timeout if timeout is not None else float("inf"))
        replies: list[Message] = []
        while ids and time.monotonic() < end:
            got = list(self.pull_messages(ids))
            replies += got
            ids -= {m.metadata.reply_to_message_id for m in got}
            ids &= set(self._futures)
            if ids:
                time.sleep(0.02)
        for mid in ids:  # no answer in time: dropped from this round; a late reply is never read
            vehicle, fut = self._futures.pop(mid)
            fut.cancel()
            self.dropped[vehicle.pseudonym] = f"no reply within {timeout:.0f} s"
        return replies

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _log(self, vehicle: Vehicle, mid: str, reply: Message) -> UplinkEntry:
        entry = UplinkEntry(vehicle.pseudonym, vehicle.node_id, mid, time.time())
        if reply.has_error():
            entry.error = f"{reply.error.code}: {reply.error.reason}"
            return entry
        for name, record in reply.content.items():
            items = {}
            if isinstance(record, ArrayRecord):
                kind = "arrays"
                for k, arr in record.items():
                    a = np.ascontiguousarray(arr.numpy())
                    items[k] = {"sha256": self._put(a.tobytes()), "dtype": str(a.dtype), "shape": list(a.shape)}
            elif isinstance(record, MetricRecord):
                kind = "metrics"
                items = {k: {"value": v} for k, v in record.items()}
            else:
                kind = "config"
                for k, v in record.items():
                    if isinstance(v, list) and v and isinstance(v[0], (bytes, bytearray)):  # e.g. SecAgg+'s masked vectors
                        for i, b in enumerate(v):
                            items[f"{k}[{i}]"] = {"sha256": self._put(bytes(b)), "bytes": len(b)}
                        continue
                    items[k] = ({"sha256": self._put(bytes(v)), "bytes": len(v)} if isinstance(v, (bytes, bytearray))
                                else {"sha256": self._put(json.dumps(v).encode()), "value": v if isinstance(v, (int, float, bool)) else None})
            entry.records[name] = {"kind": kind, "items": items}
        return entry


@dataclass
class RoundOutcome:
    weights: dict[str, np.ndarray]
    uplink: list[UplinkEntry]
    dropped: dict[str, str]
    invited: list[str]
    metrics: dict
    updates: dict[str, dict]  # pseudonym -> {"digests": {name: sha256}, "metrics": {...}, "masked": bool?}


def run_round(config: OccupantConfig, vehicles: list[Vehicle], initial: dict[str, np.ndarray], round_no: int, put,
              seed: int = 0, timeout_s: float | None = None) -> RoundOutcome:
    """One round of Flower's strategy over ``vehicles``; :class:`RoundFailed` below the minimum of participants."""
    fed = config.federated
    if len(vehicles) < fed.min_participants:
        raise RoundFailed(f"{len(vehicles)} vehicles enrolled, the round needs at least {fed.min_participants} "
                          f"(federated.min_participants in {config.path})")
    timeout = fed.round_timeout_s if timeout_s is None else timeout_s
    common = dict(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=fed.min_participants,
                  min_available_nodes=fed.min_participants)
    flwr_log = logging.getLogger("flwr")
    level = flwr_log.level
    flwr_log.setLevel(logging.ERROR)  # evaluation is ours, on the test vehicles: Flower need not warn that its own is off
    try:
        strategy = FedTrimmedAvg(beta=0.2, **common) if fed.aggregation == "trimmed" else FedAvg(**common)
    finally:
        flwr_log.setLevel(level)
    grid = UplinkGrid(vehicles, put, f"r{round_no:03d}")
    train_config = {
        "round": round_no, "seed": seed * 1000 + round_no, "batch-size": fed.batch_size, "local-epochs": fed.local_epochs,
        "learning-rate": fed.learning_rate, "momentum": fed.momentum, "noise-multiplier": fed.dp.noise_multiplier, "max-grad-norm": fed.dp.max_grad_norm,
        "delta": fed.dp.delta, "max-epsilon": fed.dp.max_epsilon, "timeout-s": timeout}
    try:
        if fed.secure_aggregation:
            weights, metrics = _secure_round(grid, config, initial, train_config, timeout)
        else:
            result = strategy.start(grid, ArrayRecord({k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in initial.items()}),
                                    num_rounds=1, timeout=timeout, train_config=ConfigRecord(train_config))
            weights = {k: v.detach().numpy().astype(np.float32) for k, v in result.arrays.to_torch_state_dict().items()}
            metrics = dict(result.train_metrics_clientapp.get(1, {}) or {})
    finally:
        grid.close()
    updates = {e.pseudonym: u for e in grid.uplink if (u := update_of(e)) is not None}
    if len(updates) < fed.min_participants:
        raise RoundFailed(f"round r{round_no:03d}: {len(updates)} updates arrived, at least {fed.min_participants} are needed "
                          f"(dropped: {grid.dropped or 'none'}; declined: {[e.pseudonym for e in grid.uplink if e.error] or 'none'}); "
                          "rerun the round when more vehicles are online")
    return RoundOutcome(weights, grid.uplink, dict(grid.dropped), sorted(set(grid.sent)), metrics, updates)


def update_of(entry: UplinkEntry) -> dict | None:
    """What one uplinked message contributes as a model update: the digests of its weights (in the clear, or
    SecAgg+'s masked vector) and the scalars it reported; None for protocol messages and errors."""
    if entry.error is not None:
        return None
    recs = entry.records
    if UPDATE_RECORD in recs and METRIC_RECORD in recs:
        return {"digests": {k: i["sha256"] for k, i in recs[UPDATE_RECORD]["items"].items()},
                "metrics": {k: i["value"] for k, i in recs[METRIC_RECORD]["items"].items()}}
    masked = {k: i["sha256"] for k, i in recs.get(SECAGG_RECORD, {}).get("items", {}).items() if k.startswith("masked_params")}
    if masked and LEGACY_METRICS_RECORD in recs:
        return {"digests": masked, "masked": True,
                "metrics": {k: i.get("value") for k, i in recs[LEGACY_METRICS_RECORD]["items"].items()}}
    return None


def _secure_round(grid: UplinkGrid, config: OccupantConfig, initial: dict[str, np.ndarray], train_config: dict,
                  timeout: float) -> tuple[dict[str, np.ndarray], dict]:
    """The round under SecAgg+: Flower's ``SecAggPlusWorkflow`` with its (legacy) FedAvg over the same Grid.

    Every vehicle shares its mask's key among the others; the cloud unmasks only the weighted sum, and a
    vehicle that drops after sending its masked vector is recovered from the others' shares."""
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.strategy import FedAvg as LegacyFedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
    from flwr.server.workflow.constant import MAIN_PARAMS_RECORD

    fed = config.federated
    keys = list(net.DriverStateNet(len(config.states)).state_dict())  # the order both sides flatten the weights in
    strategy = LegacyFedAvg(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=fed.min_participants,
                            min_available_clients=fed.min_participants, accept_failures=True,
                            initial_parameters=ndarrays_to_parameters([np.asarray(initial[k], np.float32) for k in keys]),
                            on_fit_config_fn=lambda _round: dict(train_config))
    context = LegacyContext(Context(run_id=grid.run.run_id, node_id=SUPERLINK_NODE_ID, node_config={}, state=RecordDict(), run_config={}),
                            config=ServerConfig(num_rounds=1, round_timeout=timeout), strategy=strategy)
    n = len(list(grid.get_node_ids()))
    workflow = SecAggPlusWorkflow(num_shares=n, reconstruction_threshold=max(2, fed.min_participants), max_weight=1e5,
                                  timeout=timeout)
    DefaultWorkflow(fit_workflow=workflow)(grid, context)
    arrays = parameters_to_ndarrays(compat_parameters(context.state.array_records[MAIN_PARAMS_RECORD]))
    return {k: np.asarray(a, np.float32) for k, a in zip(keys, arrays)}, {}


def compat_parameters(record):
    import flwr.compat.common.recorddict_compat as compat

    return compat.arrayrecord_to_parameters(record, keep_input=True)
