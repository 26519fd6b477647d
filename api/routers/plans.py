from fastapi import APIRouter

router = APIRouter(prefix="/v0/plans", tags=["plans"])
