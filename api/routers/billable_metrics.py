from fastapi import APIRouter

router = APIRouter(prefix="/v0/billableMetrics", tags=["billable metrics"])
