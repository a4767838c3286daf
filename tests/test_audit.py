"""The audit log: RFC 6962 hashing against the published vectors, proofs, signed heads, and tampering caught by name."""

import json
import random
import sqlite3

import pytest
from click.testing import CliRunner

from avops.audit import merkle
from avops.audit.log import AuditError, check_proof
from avops.cli import main
from avops.home import HomeLayout
from avops.registry import ModelRegistry

# Certificate Transparency's reference leaves and tree heads (RFC 6962 test data, sizes 1..8)
CT_LEAVES = [bytes.fromhex(x) for x in ["", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                                         "606162636465666768696a6b6c6d6e6f"]]
CT_ROOTS = ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
            "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
            "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"]
CT_INCLUSION = {(0, 8): ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                         "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                         "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"],
                (5, 8): ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                         "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                         "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"],
                (2, 3): ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
                (1, 5): ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                         "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                         "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]}
CT_CONSISTENCY = {(1, 8): ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                           "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                           "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"],
                  (6, 8): ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                           "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                           "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"],
                  (2, 5): ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                           "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]}


def test_tree_heads_and_proofs_match_the_rfc6962_reference_vectors():
    tree = merkle.Tree([merkle.leaf_hash(x) for x in CT_LEAVES])
    assert merkle.Tree().root() == merkle.EMPTY_ROOT
    assert [tree.root(n).hex() for n in range(1, 9)] == CT_ROOTS
    for (index, size), proof in CT_INCLUSION.items():
        assert [p.hex() for p in tree.inclusion_proof(index, size)] == proof
        assert merkle.verify_inclusion(merkle.leaf_hash(CT_LEAVES[index]), index, size, [bytes.fromhex(p) for p in proof],
                                       bytes.fromhex(CT_ROOTS[size - 1]))
    for (old, new), proof in CT_CONSISTENCY.items():
        assert [p.hex() for p in tree.consistency_proof(old, new)] == proof
        assert merkle.verify_consistency(old, new, [bytes.fromhex(p) for p in proof], bytes.fromhex(CT_ROOTS[old - 1]),
                                         bytes.fromhex(CT_ROOTS[new - 1]))


def _mth(hashes):  # RFC 6962's recursive definition, the reference the fast tree must equal
    if len(hashes) == 1:
        return hashes[0]
    k = 1 << ((len(hashes) - 1).bit_length() - 1)
    return merkle.node_hash(_mth(hashes[:k]), _mth(hashes[k:]))


def test_every_proof_of_every_tree_shape_verifies_and_a_wrong_one_does_not():
    rng = random.Random(6962)
    for n in range(1, 40):
        leaves = [merkle.leaf_hash(bytes([j]) + rng.randbytes(rng.randint(0, 9))) for j in range(n)]
        tree = merkle.Tree()
        for h in leaves:  # appended one by one, so the lazily kept levels are exercised too
            tree.append(h)
        for m in range(1, n + 1):
            root = tree.root(m)
            assert root == _mth(leaves[:m])
            for i in range(m):
                proof = tree.inclusion_proof(i, m)
                assert merkle.verify_inclusion(leaves[i], i, m, proof, root)
                if m > 1:
                    assert not merkle.verify_inclusion(leaves[i], i ^ 1 if i ^ 1 < m else i - 1, m, proof, root)
                if m > 1:
                    assert not merkle.verify_inclusion(leaves[(i + 1) % m], i, m, proof, root)
            proof = tree.consistency_proof(m, n)
            assert merkle.verify_consistency(m, n, proof, root, tree.root())
            if m < n:
                assert not merkle.verify_consistency(m, n, proof, merkle.leaf_hash(b"forged"), tree.root())
    # a leaf can never pass for a node: domain separation
    a, b = merkle.leaf_hash(b"a"), merkle.leaf_hash(b"b")
    assert merkle.leaf_hash(a + b) != merkle.node_hash(a, b)


@pytest.fixture
def log(tmp_path):
    home = HomeLayout(tmp_path / "home")
    reg = ModelRegistry.local(home)
    for i in range(6):
        reg.audit.append("dataset_commit", f"cohort-{i % 2}", {"commit": f"{i:064x}"}, "pipeline", run_id=f"run-{i}")
    return home, reg


def _raw(home):
    return sqlite3.connect(home.root / "registry" / "models.db")


def test_a_clean_log_verifies_and_every_event_has_an_offline_checkable_proof(log, tmp_path):
    home, reg = log
    v = reg.register("perception", "cohort-0", "ab" * 32, {"dataset_commit": "c"}, {}, "trainer", "trained")
    reg.transition("perception", v.version, "validated", "gates", "all gates passed")
    audit = reg.audit
    kinds = [e.kind for e in audit.events()]
    assert kinds == ["dataset_commit"] * 6 + ["registry", "registry"], "registry changes are logged in the same transaction"
    report = audit.verify()
    assert report.ok and report.size == 8 and report.heads == 8, report.problems
    for i in range(8):
        bundle = audit.prove(i)
        assert check_proof(json.loads(json.dumps(bundle))) == []
    head = audit.head().to_dict()
    old = audit.consistency(3)
    assert merkle.verify_consistency(3, 8, [bytes.fromhex(x) for x in old["consistency_proof"]],
                                     bytes.fromhex(old["old"]["root_hash"]), bytes.fromhex(head["root_hash"]))
    # offline checks fail on a changed event, a changed proof, or a head the auditor did not publish
    bad = audit.prove(2)
    bad["entry"] = bad["entry"].replace("pipeline", "intruder")
    assert any("does not hash" in p for p in check_proof(bad))
    bad = audit.prove(2)
    bad["inclusion_proof"][0] = "00" * 32
    assert any("inclusion proof does not lead" in p for p in check_proof(bad))
    bad = audit.prove(2)
    forged = dict(bad["tree_head"], root_hash="11" * 32)
    assert any("signature does not verify" in p for p in check_proof(dict(bad, tree_head=forged)))
    stale = audit.prove(2)
    reg.audit.append("approval", "perception/v1", {"by": "safety manager"}, "jdoe")
    assert any("not the trusted head" in p for p in check_proof(stale, trusted_head=audit.head().to_dict()))
    with pytest.raises(AuditError, match="no event 99"):
        audit.prove(99)


def _drop_guards(raw):
    for t in ("audit_events", "audit_heads"):
        raw.execute(f"DROP TRIGGER IF EXISTS {t}_no_update")
        raw.execute(f"DROP TRIGGER IF EXISTS {t}_no_delete")


def test_the_log_is_append_only_in_the_database(log):
    home, _ = log
    raw = _raw(home)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        raw.execute("UPDATE audit_events SET actor = 'x' WHERE idx = 1")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        raw.execute("DELETE FROM audit_heads")


def test_an_edited_entry_is_named(log):
    home, reg = log
    raw = _raw(home)
    _drop_guards(raw)  # an attacker with write access to the database file
    entry = raw.execute("SELECT entry FROM audit_events WHERE idx = 3").fetchone()[0]
    raw.execute("UPDATE audit_events SET entry = ? WHERE idx = 3", (entry.replace("run-3", "run-X"),))
    raw.commit()
    problems = reg.audit.verify().problems
    assert any(p.startswith("event 3 (dataset_commit cohort-1): its entry no longer matches") for p in problems), problems
    assert any("signed tree head of size 4" in p and "an event in 3..3" in p for p in problems), problems


def test_an_entry_edited_with_its_leaf_hash_is_caught_by_the_signed_heads(log):
    home, reg = log
    raw = _raw(home)
    _drop_guards(raw)
    entry = raw.execute("SELECT entry FROM audit_events WHERE idx = 2").fetchone()[0].replace("pipeline", "intruder")
    raw.execute("UPDATE audit_events SET entry = ?, actor = 'intruder', leaf_hash = ? WHERE idx = 2",
                (entry, merkle.leaf_hash(entry.encode()).hex()))
    raw.commit()
    problems = reg.audit.verify().problems
    assert problems[0].startswith("signed tree head of size 3") and "an event in 2..2 was changed" in problems[0], problems
    assert problems[1:] == ["3 later signed tree head(s) (sizes 4..6) no longer match either"], problems


def test_a_dropped_entry_is_named(log):
    home, reg = log
    raw = _raw(home)
    _drop_guards(raw)
    raw.execute("DELETE FROM audit_events WHERE idx = 4")
    raw.commit()
    problems = reg.audit.verify().problems
    assert "events 4..4 are missing: the log jumps from 3 to 5 (entries were deleted)" in problems[0], problems
    raw.execute("DELETE FROM audit_events WHERE idx = 5")
    raw.execute("DELETE FROM audit_heads WHERE tree_size = 6")
    raw.commit()
    problems = reg.audit.verify().problems
    assert any("size 5" in p and "events 4..4 were deleted" in p for p in problems), problems


def test_reordered_entries_are_named(log):
    home, reg = log
    raw = _raw(home)
    _drop_guards(raw)
    rows = {i: raw.execute("SELECT at, kind, subject, actor, entry, leaf_hash FROM audit_events WHERE idx = ?", (i,)).fetchone()
            for i in (1, 2)}
    for i, j in ((1, 2), (2, 1)):
        raw.execute("UPDATE audit_events SET at = ?, kind = ?, subject = ?, actor = ?, entry = ?, leaf_hash = ? WHERE idx = ?",
                    (*rows[j], i))
    raw.commit()
    problems = reg.audit.verify().problems
    assert "event at position 1 holds the entry logged as event 2: entries were reordered" in problems
    assert "event at position 2 holds the entry logged as event 1: entries were reordered" in problems


def test_audit_cli_verifies_proves_and_fails_on_tampering(log, tmp_path):
    home, reg = log
    ok = CliRunner().invoke(main, ["audit", "verify", "--home", str(home.root)])
    assert ok.exit_code == 0 and "6 events" in ok.output and "intact" in ok.output, ok.output
    proof = CliRunner().invoke(main, ["audit", "prove", "2", "--home", str(home.root)])
    assert proof.exit_code == 0, proof.output
    path = tmp_path / "proof.json"
    path.write_text(proof.output)
    checked = CliRunner().invoke(main, ["audit", "check-proof", str(path)])
    assert checked.exit_code == 0 and "holds" in checked.output, checked.output
    bundle = json.loads(path.read_text())
    bundle["entry"] = bundle["entry"].replace("cohort-0", "cohort-9")
    path.write_text(json.dumps(bundle))
    assert CliRunner().invoke(main, ["audit", "check-proof", str(path)]).exit_code == 1
    approve = CliRunner().invoke(main, ["audit", "approve", "--subject", "perception/v1", "--by", "J. Doe, safety manager",
                                        "--statement", "canary approved", "--home", str(home.root)])
    assert approve.exit_code == 0 and "logged as event 6" in approve.output, approve.output
    cons = CliRunner().invoke(main, ["audit", "consistency", "3", "--home", str(home.root)])
    assert cons.exit_code == 0, cons.output
    c = json.loads(cons.output)
    assert merkle.verify_consistency(3, 7, [bytes.fromhex(x) for x in c["consistency_proof"]], bytes.fromhex(c["old"]["root_hash"]),
                                     bytes.fromhex(c["new"]["root_hash"]))
    raw = _raw(home)
    _drop_guards(raw)
    raw.execute("DELETE FROM audit_events WHERE idx = 0")
    raw.commit()
    bad = CliRunner().invoke(main, ["audit", "verify", "--home", str(home.root)])
    assert bad.exit_code == 1 and "missing" in bad.output, bad.output
