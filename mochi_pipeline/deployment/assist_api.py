"""HTTP endpoints of the assist operations on ``mochi serve``: POST /assist/context, /assist/rerank, /assist/verify."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from mochi_pipeline.deployment.assist import Assistant, AssistError, ContextBlock, Finding, RankedCandidate


class ContextRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, description="What the large model is asked to do.")
    k: int = Field(5, ge=1, le=50, description="Chunks to retrieve.")
    rewrite: bool = Field(False, description="Widen the search with a sketch the domain model writes first.")
    note: bool = Field(True, description="Add a short note written by the domain model.")


class ContextResponse(ContextBlock):
    rendered: str = Field(description="The block as a large model reads it (markdown).")


class RerankRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str
    candidates: list[str] = Field(min_length=1, max_length=64)


class RerankResponse(BaseModel):
    ranked: list[RankedCandidate]


class VerifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(min_length=1)
    path: str = Field("", description="Where the code goes (tells the language), e.g. pkg/module.py.")
    surprising_lines: int = Field(3, ge=0, le=20, description="How many surprising lines to report at most.")


class VerifyResponse(BaseModel):
    findings: list[Finding]


def _bad(err: AssistError) -> JSONResponse:
    return JSONResponse({"error": {"message": str(err), "type": "invalid_request_error", "param": None,
                                   "code": None}}, status_code=400)


def assist_router(assistant: Assistant) -> APIRouter:
    router = APIRouter(prefix="/assist", tags=["assist"])

    @router.post("/context", response_model=ContextResponse)
    def context(req: ContextRequest):
        try:
            block = assistant.enhance(req.query, k=req.k, rewrite=req.rewrite, note=req.note)
        except AssistError as err:
            return _bad(err)
        return ContextResponse(**block.model_dump(), rendered=block.markdown())

    @router.post("/rerank", response_model=RerankResponse)
    def rerank(req: RerankRequest):
        try:
            return RerankResponse(ranked=assistant.rerank(req.prompt, req.candidates))
        except AssistError as err:
            return _bad(err)

    @router.post("/verify", response_model=VerifyResponse)
    def verify(req: VerifyRequest):
        try:
            return VerifyResponse(findings=assistant.verify(req.code, path=req.path,
                                                            surprising_lines=req.surprising_lines))
        except AssistError as err:
            return _bad(err)

    return router
