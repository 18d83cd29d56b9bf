"""A train step sharded over 8 fake CPU devices (data; data x fsdp x tensor) gives the
same loss and updated parameters as on one device.

Runs in a subprocess: XLA_FLAGS must set the device count before jax initialises, and a pytest
worker may already have jax initialised with one device.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent

SCRIPT = textwrap.dedent(
    r"""
    import json, sys
    from pathlib import Path
    import jax, numpy as np
    sys.path.insert(0, sys.argv[1])
    import trainlib
    from embeddinggemma_jax import parallel
    from embeddinggemma_jax.train.trainer import Trainer

    assert jax.device_count() == 8, jax.devices()
    tmp = Path(sys.argv[2])
    meshes = {
        "one_device": ({"data": 1}, jax.devices()[:1]),
        "data8": ({"data": 8}, None),
        "data2_fsdp2_tensor2": ({"data": 2, "fsdp": 2, "tensor": 2}, None),
    }
    out = {}
    for name, (axes, devices) in meshes.items():
        # Adam divides by |g| + eps, so with a small eps a gradient entry that cancels to ~0
        # (where float32 summation order decides its value) becomes a full-size update. eps=1
        # makes the update linear in g at this scale (lr=1 keeps it large): the comparison then
        # checks the sharded step, not the amplified noise of cancelling sums.
        config = trainlib.tiny_config(
            tmp,
            num_steps=2,
            **{
                "checkpoint.every": 0,
                "optimizer.eps": 1.0,
                "optimizer.learning_rate": 1.0,
                "optimizer.warmup_steps": 0,
                "optimizer.decay": "constant",
            },
        )
        mesh = parallel.make_mesh(axes, devices)
        trainer = Trainer(config, tmp / name, mesh=mesh)
        summary = trainer.fit()
        params = jax.device_get(trainer.state.params)
        leaves = jax.tree_util.tree_flatten_with_path(params)[0]
        out[name] = {
            "losses": [row["loss"] for row in summary["history"]["train"]],
            "params": {jax.tree_util.keystr(p): np.asarray(x).tolist() for p, x in leaves},
            "shardings": {
                jax.tree_util.keystr(p): str(x.sharding.spec)
                for p, x in jax.tree_util.tree_flatten_with_path(trainer.state.params)[0]
            },
        }
        trainer.close()
    Path(sys.argv[3]).write_text(json.dumps(out))
    """
)


def test_sharded_step_matches_one_device(tmp_path):
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    ).strip()
    env["JAX_PLATFORMS"] = "cpu"
    # XLA's cheapest compile: three meshes' train steps to compile, two tiny steps each to run;
    # all three are compiled the same way, so the comparison is unchanged.
    env["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"
    result = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(HERE), str(tmp_path), str(result)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(result.read_text())
    ref = out.pop("one_device")
    assert len(ref["losses"]) == 2
    import numpy as np

    for name, got in out.items():
        np.testing.assert_allclose(got["losses"], ref["losses"], rtol=1e-5, err_msg=name)
        assert got["params"].keys() == ref["params"].keys()
        for key, value in ref["params"].items():
            want = np.asarray(value)
            # rtol 1e-5, with entries near zero judged against their array's scale.
            np.testing.assert_allclose(
                got["params"][key],
                want,
                rtol=1e-5,
                atol=1e-5 * float(np.abs(want).max()),
                err_msg=f"{name} {key}",
            )
    # The mesh really shards: fsdp splits the embed axis of weights, tensor the mlp axis.
    mixed = out["data2_fsdp2_tensor2"]["shardings"]
    assert "'tensor', 'fsdp'" in mixed["['encoder']['layer_0']['mlp']['down']['w']"]
