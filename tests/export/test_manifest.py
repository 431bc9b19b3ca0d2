"""export/manifest.py: what of the manifest goes into model.onnx's metadata."""

import json

from tensorgpt.export.manifest import metadata_props


def test_run_facts_of_healing_stay_out_of_the_model_file() -> None:
    # The same inputs must give the same model.onnx bytes: a healed export's wall time and
    # checkpoint path differ from run to run, so only manifest.json may carry them.
    healing = {"steps": 20, "kl_after": 0.1, "seconds": 44.6, "checkpoint": "/x/heal/ab.pt"}
    manifest = {
        "format": "tensorgpt",
        "embedding_info": {"bits_per_weight": 2.2, "healing": healing},
        "bytes": {"initializers": 123},
    }
    info = json.loads(metadata_props(manifest)["tensorgpt.embedding_info"])
    assert info["healing"] == {"steps": 20, "kl_after": 0.1}
    assert info["bits_per_weight"] == 2.2
    assert manifest["embedding_info"]["healing"]["seconds"] == 44.6  # the manifest keeps it
