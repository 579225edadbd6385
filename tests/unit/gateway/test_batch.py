"""A batch's outputs, named from its inputs (pure: the route's own function)."""

from __future__ import annotations

import pytest

from api.gateway.routers.jobs import _outputs
from api.gateway.schemas import BatchRequest
from cluster import SpecError


def test_a_package_batch_gives_each_master_a_folder_of_its_own() -> None:
    body = BatchRequest.model_validate({
        "spec": {"kind": "package", "package": {"ladder": [{"height": 720}], "segment_s": 4}},
        "inputs": ["/m/in/a.mov", "/m/in/b.mxf"],
        "output_dir": "/m/packages",
    })  # fmt: skip
    assert _outputs(body) == ["/m/packages/a", "/m/packages/b"]
    assert body.spec.package is not None and body.spec.package.segment_s == 4
    transcode = body.model_copy(update={"spec": body.spec.model_copy(update={"kind": "transcode"})})
    assert _outputs(transcode) == ["/m/packages/a.mp4", "/m/packages/b.mp4"]
    twice = body.model_copy(update={"inputs": ["/m/in/a.mov", "/m/other/a.mov"]})
    with pytest.raises(SpecError, match="two inputs share a file name"):
        _outputs(twice)
