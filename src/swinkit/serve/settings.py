"""Settings of ``swinkit serve``: one typed model filled from flags, ``SWINKIT_*`` variables and a file.

Memory: each request being handled holds up to about three times ``max_body_bytes`` (the body, its
strings, the decoded images), so ``max_concurrent_requests * 3 * max_body_bytes`` bounds it, plus two
images of ``max_pixels`` being decoded and the queued model inputs.

Precedence, highest first: values passed to the constructor (the command-line flags), environment
variables (``SWINKIT_MAX_BATCH_SIZE=8``; lists as JSON), the optional YAML or JSON settings file named by
``config_file`` / ``SWINKIT_CONFIG_FILE``, then the defaults below.
"""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from swinkit.data.decode import DEFAULT_MAX_PIXELS

MiB = 1024 * 1024


def read_settings_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML or JSON settings file (JSON is YAML); raises ValueError if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"settings file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ValueError(f"settings file {path} is not valid YAML or JSON: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"settings file {path} must hold a mapping of setting names to values")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


class _FileSource(PydanticBaseSettingsSource):
    """The values of the optional settings file."""

    def __init__(self, settings_cls: type[BaseSettings], path: str | Path | None) -> None:
        super().__init__(settings_cls)
        self._values = read_settings_file(path) if path else {}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._values)


class ServeSettings(BaseSettings):
    """Everything ``swinkit serve`` can be told; see ``swinkit serve --help`` for each field's meaning."""

    model_config = SettingsConfigDict(env_prefix="SWINKIT_", extra="forbid", validate_default=True)

    model: str = Field(description="hub id, Hugging Face folder, checkpoint file or preset name to serve")
    config_file: Path | None = Field(None, description="optional YAML/JSON file with more settings")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    device: str = "cpu"
    runtime: Literal["torch", "openvino", "onnxruntime"] | None = Field(
        None, description="the backend running the network (default: torch, or an export folder's own)"
    )
    precision: Literal["fp32", "bf16", "int8"] | None = Field(
        None, description="inference precision (default: fp32, or an export folder's own)"
    )
    openvino_hint: Literal["LATENCY", "THROUGHPUT"] = Field(
        "LATENCY",
        description="OpenVINO performance hint: THROUGHPUT splits batches over parallel requests (slower on 2 cores)",
    )
    torch_threads: int | None = Field(None, ge=1, description="intra-op threads of torch (default: torch's)")
    torch_prepack: bool = Field(
        False, description="torch fp32 on the CPU: linear layers on weights oneDNN prepacked once (faster)"
    )
    max_batch_size: int = Field(16, ge=1, description="images run through the model together at most")
    inference_workers: int = Field(
        1, ge=1, description="batches run at once, each in its own thread (OpenVINO THROUGHPUT: its streams)"
    )
    score_threshold: float | None = Field(
        None,
        ge=0,
        le=1,
        description="detection: objects scoring below this are left out (default: the model's)",
    )
    max_detections: int | None = Field(
        None, ge=1, description="detection: objects per image at most (default: the model's, 100)"
    )
    mode: Literal["whole", "slide"] | None = Field(
        None,
        description="semantic segmentation: whole-image or sliding-window inference (default: whole)",
    )
    tta: bool | None = Field(
        None, description="semantic segmentation: multi-scale + flip testing (mmseg's tta_pipeline)"
    )
    max_delay_ms: float = Field(10.0, ge=0, description="how long a batch waits for more images")
    max_queue_size: int = Field(256, ge=1, description="images waiting for the model; beyond it: 503")
    max_concurrent_requests: int = Field(64, ge=1, description="requests being handled at once; beyond: 503")
    max_images_per_request: int = Field(32, ge=1)
    max_body_bytes: int = Field(16 * MiB, ge=1, description="largest request body accepted (413 beyond)")
    body_timeout_s: float = Field(
        30.0, gt=0, description="time allowed to receive a request body (408 beyond)"
    )
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1, description="largest width*height decoded")
    max_aspect_ratio: float = Field(50.0, ge=1, description="longest side / shortest side accepted")
    allow_urls: bool = Field(False, description="accept http(s) URLs as images")
    url_allowed_networks: list[IPv4Network | IPv6Network] = Field(
        default_factory=list, description="non-public networks URL inputs may reach anyway (CIDR)"
    )
    url_timeout_s: float = Field(10.0, gt=0, description="total time allowed for one URL download")
    url_max_bytes: int = Field(10 * MiB, ge=1, description="largest image downloaded from a URL")
    url_max_redirects: int = Field(3, ge=0)
    retry_after_s: int = Field(1, ge=0, description="Retry-After of 503 answers")
    warmup: bool = Field(True, description="run one batch through the model before reporting ready")
    graceful_timeout_s: int = Field(30, ge=1, description="seconds shutdown waits for in-flight requests")
    log_level: str = "info"

    @model_validator(mode="after")
    def _one_request_fits_the_queue(self) -> ServeSettings:
        if self.max_images_per_request > self.max_queue_size:
            raise ValueError(
                f"max_images_per_request ({self.max_images_per_request}) exceeds max_queue_size "
                f"({self.max_queue_size}): such a request could never be queued"
            )
        return self

    def task_options(self) -> dict[str, Any]:
        """The task's own predictor settings that were given (``load_predictor(**options)``, as
        ``swinkit predict --mode/--tta`` passes them); a task whose predictor takes none refuses them."""
        options = {"mode": self.mode, "tta": self.tta or None}
        return {name: value for name, value in options.items() if value is not None}

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = init_settings().get("config_file") or env_settings().get("config_file")
        return init_settings, env_settings, _FileSource(settings_cls, path)
