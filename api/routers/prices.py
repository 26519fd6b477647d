from fastapi import APIRouter

router = APIRouter(prefix="/v0/prices", tags=["prices"])
